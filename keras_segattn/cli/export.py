"""``keras-segattn export MODEL.keras --format saved_model|tflite|onnx ...``"""


def add_arguments(parser):
    parser.add_argument("model", help="a .keras model file")
    parser.add_argument("--format", default="saved_model", choices=("saved_model", "tflite", "onnx"),
                        help="export format (default: %(default)s)")
    parser.add_argument("--output-path", "-o", default=None,
                        help="output directory (SavedModel) or file (.tflite/.onnx); default: next "
                             "to the model")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="fixed input height and width (required for tflite, and for onnx on "
                             "torch); omit for a SavedModel accepting any size (TF backend)")
    parser.add_argument("--quantization", default=None, choices=("float16", "int8"),
                        help="TFLite quantization (default: float32)")
    parser.add_argument("--output", default="logits", choices=("logits", "classes", "both"),
                        help="what the exported model returns (default: %(default)s)")
    parser.add_argument("--calibration-data", default="synthetic",
                        help="int8: dataset name for keras_segattn.data.load (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="int8: data_dir for the calibration dataset")
    parser.add_argument("--calibration-samples", type=int, default=32,
                        help="int8: number of calibration images (default: %(default)s)")


def _default_path(model, fmt, quantization):
    import os

    stem = os.path.splitext(model)[0]
    if fmt == "saved_model":
        return stem + "_saved_model"
    suffix = f"_{quantization}" if quantization else ""
    return f"{stem}{suffix}.{fmt}"


def run(args):
    import sys

    from keras_segattn.export import export

    path = args.output_path or _default_path(args.model, args.format, args.quantization)
    representative = None
    if args.quantization == "int8":
        from keras_segattn import data

        kwargs = {"data_dir": args.data_dir} if args.data_dir else {}
        representative = data.load(args.calibration_data, "train", **kwargs)
    try:
        export(args.model, path, format=args.format,
               input_size=tuple(args.input_size) if args.input_size else None,
               quantization=args.quantization, representative_data=representative,
               output=args.output, num_calibration_samples=args.calibration_samples)
    except ValueError as error:
        print(f"keras-segattn export: error: {error}", file=sys.stderr)
        return 2
    print(f"exported {args.model} -> {path} ({args.format}"
          f"{', ' + args.quantization if args.quantization else ''}, output={args.output})")
    return 0

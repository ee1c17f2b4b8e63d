"""``keras-segattn export MODEL.keras --format saved_model|tflite|onnx ...``

``--quantization int8`` calibrates on images of the dataset the run was trained on (with its
config, e.g. the synthetic ``32px``), read from the run's ``config.json`` beside the model,
unless ``--calibration-data`` / ``--dataset-config`` say otherwise.
"""

import os

from keras_segattn.cli.run_config import fill_dataset_defaults


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
    parser.add_argument("--calibration-data", default=None,
                        help="int8: dataset of the calibration images (default: the run's "
                             "dataset from the config.json beside the model, else synthetic)")
    parser.add_argument("--dataset-config", default=None,
                        help="int8: builder config of the calibration dataset (default: the "
                             "run's, e.g. synthetic 32px)")
    parser.add_argument("--data-dir", default=None,
                        help="int8: tensorflow-datasets data directory (default: the run's)")
    parser.add_argument("--manual-dir", default=None,
                        help="int8: folder with the dataset's manual downloads (default: the run's)")
    parser.add_argument("--calibration-samples", type=int, default=32,
                        help="int8: number of calibration images (default: %(default)s)")


def _default_path(model, fmt, quantization):
    stem = os.path.splitext(model)[0]
    if fmt == "saved_model":
        return stem + "_saved_model"
    suffix = f"_{quantization}" if quantization else ""
    return f"{stem}{suffix}.{fmt}"


def calibration_dataset(args):
    """The int8 calibration images: ``load(dataset, "train", config=...)`` of the run."""
    from keras_segattn import data

    fill_dataset_defaults(args, args.model, dataset_attr="calibration_data")
    kwargs = {key: value for key, value in (("data_dir", args.data_dir),
                                            ("manual_dir", args.manual_dir),
                                            ("config", args.dataset_config)) if value}
    return data.load(args.calibration_data, "train", **kwargs)


def run(args):
    from keras_segattn import validation

    if args.model.endswith(".keras"):
        validation.check_keras_file(args.model)
    elif not os.path.exists(args.model):
        raise ValueError(f"model file {args.model!r} does not exist.")
    validation.check_positive_int(args.calibration_samples, "--calibration-samples")
    from keras_segattn.export import check_options, export

    check_options(args.format, args.input_size and tuple(args.input_size), args.quantization,
                  args.output)  # before the calibration data is read
    path = args.output_path or _default_path(args.model, args.format, args.quantization)
    representative = calibration_dataset(args) if args.quantization == "int8" else None
    export(args.model, path, format=args.format,
           input_size=tuple(args.input_size) if args.input_size else None,
           quantization=args.quantization, representative_data=representative,
           output=args.output, num_calibration_samples=args.calibration_samples)
    print(f"exported {args.model} -> {path} ({args.format}"
          f"{', ' + args.quantization if args.quantization else ''}, output={args.output})")
    return 0

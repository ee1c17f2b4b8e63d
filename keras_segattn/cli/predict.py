"""``keras-segattn predict --model PATH INPUTS... --output-dir DIR``

Exits 0 when every input was segmented, 1 when any input failed (unreadable image, a
folder without images, a pattern that matches nothing: each is listed on stderr), 2 for bad
arguments.
"""


def add_arguments(parser):
    parser.add_argument("inputs", nargs="+", help="image files, folders and/or glob patterns")
    parser.add_argument("--model", required=True,
                        help="a .keras file, a SavedModel directory or a .tflite file")
    parser.add_argument("--output-dir", required=True, help="where the results are written")
    parser.add_argument("--palette", default="synthetic",
                        choices=("cityscapes", "ade20k", "voc", "synthetic"),
                        help="colours of the class masks (default: %(default)s)")
    parser.add_argument("--mode", default="whole", choices=("whole", "slide", "multiscale"),
                        help="whole image, sliding window or multi-scale (default: %(default)s)")
    parser.add_argument("--crop", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="sliding-window size (required for --mode slide unless the model has "
                             "a fixed size)")
    parser.add_argument("--stride", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="sliding-window step (default: the crop size)")
    parser.add_argument("--scales", nargs="+", type=float, default=None,
                        help="multi-scale factors (default: 0.5 0.75 1.0 1.25 1.5 1.75)")
    parser.add_argument("--flip", action="store_true", help="also average the flipped image")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args):
    import logging
    import sys

    from keras_segattn import validation
    from keras_segattn.inference import DEFAULT_SCALES, predict_files

    if args.model.endswith(".keras"):
        validation.check_keras_file(args.model)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    result = predict_files(
        args.model, args.inputs, args.output_dir, palette=args.palette, mode=args.mode,
        crop_size=tuple(args.crop) if args.crop else None,
        stride=tuple(args.stride) if args.stride else None,
        scales=tuple(args.scales) if args.scales else DEFAULT_SCALES, flip=args.flip,
        alpha=args.alpha, progress=not args.no_progress,
    )
    failed = result["failed"]
    print(f"segmented {len(result['written'])} image(s) -> {args.output_dir}; "
          f"{len(failed)} failed", file=sys.stderr)
    for path, message in failed:
        print(f"failed: {path}: {message}", file=sys.stderr)
    if not result["written"] and not failed:
        raise ValueError(f"no images found in {' '.join(args.inputs)}.")
    return 1 if failed else 0

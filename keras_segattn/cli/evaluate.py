"""``keras-segattn evaluate``: mIoU / mAcc / aAcc and the per-class table of a saved model."""

import os

from keras_segattn.cli.run_config import fill_dataset_defaults
from keras_segattn.common import pair_argument as _pair


def add_arguments(parser):
    parser.add_argument("model_path", help="a .keras model saved by `keras-segattn train`")
    parser.add_argument("--dataset", help="dataset name (default: the one the run in the "
                        "model's folder was trained on, read from its config.json; else synthetic)")
    parser.add_argument("--split", default="validation",
                        help="tfds split, e.g. validation, train[:100] (default: %(default)s)")
    parser.add_argument("--data-dir", help="tensorflow-datasets data directory (default: the "
                                           "run's, else ~/tensorflow_datasets)")
    parser.add_argument("--manual-dir", help="folder with the manually downloaded archives")
    parser.add_argument("--dataset-config", help="builder config, e.g. synthetic: 32px "
                        "(default: from the run's config.json when evaluating that dataset)")
    parser.add_argument("--mode", default="whole", choices=("whole", "slide", "multiscale"),
                        help="inference mode (default: %(default)s)")
    parser.add_argument("--crop-size", type=_pair, help="sliding-window size HxW (slide mode)")
    parser.add_argument("--stride", type=_pair, help="sliding-window step HxW")
    parser.add_argument("--scales", default="0.5,0.75,1.0,1.25,1.5,1.75",
                        help="comma-separated ratios for multiscale mode (default: %(default)s)")
    parser.add_argument("--flip", action="store_true", help="average with horizontal flip")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per batch (default: %(default)s)")
    parser.add_argument("--max-batches", type=int, default=None,
                        help="stop after this many batches (default: all)")


def _defaults_from_run(args):
    """Fill dataset, config and data dir from the ``config.json`` that ``keras-segattn
    train`` saves beside ``model.keras``, so a run evaluates on what it trained on."""
    fill_dataset_defaults(args, args.model_path)


def run(args):
    from keras_segattn import validation

    validation.check_keras_file(args.model_path)
    _defaults_from_run(args)
    from keras_segattn import data

    info = data.dataset_info(args.dataset)
    if args.manual_dir and not os.path.isdir(args.manual_dir):
        raise ValueError(f"--manual-dir {args.manual_dir!r} does not exist or is not a "
                         "directory.")
    try:
        scales = tuple(float(s) for s in args.scales.split(",") if s)
    except ValueError:
        raise ValueError(
            f"--scales must be comma-separated numbers; got {args.scales!r}.") from None
    if args.mode == "slide" and args.crop_size is None:
        raise ValueError("--mode slide needs --crop-size HxW (and optionally --stride).")
    for name in ("batch_size", "max_batches"):
        validation.check_positive_int(getattr(args, name), "--" + name.replace("_", "-"),
                                      allow_none=True)
    import keras

    import keras_segattn.models  # noqa: F401  (registers the classes for load_model)
    from keras_segattn import evaluation

    model = keras.saving.load_model(args.model_path, compile=False)
    kwargs = {k: v for k, v in (("data_dir", args.data_dir), ("manual_dir", args.manual_dir),
                                ("config", args.dataset_config)) if v}
    dataset = data.make_pipeline(data.load(args.dataset, args.split, **kwargs), training=False,
                                 batch_size=args.batch_size, eval_scale=info.scale,
                                 num_classes=info.num_classes, name=args.dataset)
    with validation.one_line_errors():
        result = evaluation.evaluate(
            model, dataset, info.num_classes, class_names=info.class_names, mode=args.mode,
            crop_size=args.crop_size, stride=args.stride, scales=scales, flip=args.flip,
            max_batches=args.max_batches, verbose=True)
    print(result)
    print(f"{result['num_images']} images, {result['seconds']:.1f} s, mode={args.mode}")
    return 0

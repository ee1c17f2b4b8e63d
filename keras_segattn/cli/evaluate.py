"""``keras-segattn evaluate``: mIoU / mAcc / aAcc and the per-class table of a saved model
or a preset.

``keras-segattn evaluate --model danet_resnet101_cityscapes --dataset cityscapes`` applies
the preset's evaluation protocol (mmseg's: keep-ratio resize of each image to the protocol's
scale, whole image or sliding window with its crop and stride; ``--protocol ms_flip``: the
multi-scale + flip protocol of the published ms+flip mIoU), with the labels at their original
resolution as mmseg evaluates them; ``--mode``, ``--crop-size``, ``--stride``, ``--scales``
and ``--flip`` override parts of it.
"""

import os

from keras_segattn.cli.model_source import PROTOCOL_CHOICES
from keras_segattn.cli.run_config import fill_dataset_defaults
from keras_segattn.common import pair_argument as _pair


def add_arguments(parser):
    parser.add_argument("model_path", nargs="?", default=None,
                        help="a .keras model saved by `keras-segattn train` (or use --model)")
    parser.add_argument("--model", default=None,
                        help="a .keras file, a preset name (e.g. danet_resnet101_cityscapes; "
                             "downloaded once) or a preset directory")
    parser.add_argument("--dataset", help="dataset name (default: a preset's dataset, else the "
                        "one the run in the model's folder was trained on, read from its "
                        "config.json; else synthetic)")
    parser.add_argument("--split", default="validation",
                        help="tfds split, e.g. validation, train[:100] (default: %(default)s)")
    parser.add_argument("--data-dir", help="tensorflow-datasets data directory (default: the "
                                           "run's, else ~/tensorflow_datasets)")
    parser.add_argument("--manual-dir", help="folder with the manually downloaded archives")
    parser.add_argument("--dataset-config", help="builder config, e.g. synthetic: 32px "
                        "(default: from the run's config.json when evaluating that dataset)")
    parser.add_argument("--protocol", default=None, choices=PROTOCOL_CHOICES,
                        help="a preset's evaluation protocol: single_scale (the default for a "
                             "preset), ms_flip (multi-scale + flip) or none (the images as "
                             "the dataset's pipeline gives them)")
    parser.add_argument("--mode", default=None, choices=("whole", "slide", "multiscale"),
                        help="inference mode (default: the preset's protocol, else whole)")
    parser.add_argument("--crop-size", type=_pair, help="sliding-window size HxW (slide mode)")
    parser.add_argument("--stride", type=_pair, help="sliding-window step HxW")
    parser.add_argument("--scales", default=None,
                        help="comma-separated ratios for multiscale mode (default: "
                             "0.5,0.75,1.0,1.25,1.5,1.75)")
    parser.add_argument("--flip", action="store_true", help="average with horizontal flip")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per batch (default: %(default)s)")
    parser.add_argument("--max-batches", type=int, default=None,
                        help="stop after this many batches (default: all)")
    parser.add_argument("--cache-dir", default=None,
                        help="preset cache (default: $KERAS_SEGATTN_CACHE, else "
                             "~/.keras/keras_segattn)")


def _defaults_from_run(args):
    """Fill dataset, config and data dir from the ``config.json`` that ``keras-segattn
    train`` saves beside ``model.keras``, so a run evaluates on what it trained on."""
    fill_dataset_defaults(args, args.model_path)


def _model_argument(args):
    """The model from the positional MODEL_PATH or --model (exactly one)."""
    if args.model_path and args.model:
        raise ValueError(f"give the model once: MODEL_PATH {args.model_path!r} or --model "
                         f"{args.model!r}, not both.")
    if not (args.model_path or args.model):
        raise ValueError("no model: give a .keras file (MODEL_PATH) or --model (a .keras "
                         "file, a preset name or a preset directory).")
    return args.model_path or args.model


def run(args):
    from keras_segattn import validation
    from keras_segattn.cli import model_source

    model_arg = _model_argument(args)
    preset = model_source.is_preset(model_arg)
    protocol = model_source.default_protocol(args.protocol, preset)
    if not preset:
        validation.check_keras_file(model_arg)
        fill_dataset_defaults(args, model_arg)
    if args.manual_dir and not os.path.isdir(args.manual_dir):
        raise ValueError(f"--manual-dir {args.manual_dir!r} does not exist or is not a "
                         "directory.")
    scales = None
    if args.scales is not None:
        try:
            scales = tuple(float(s) for s in args.scales.split(",") if s)
        except ValueError:
            raise ValueError(
                f"--scales must be comma-separated numbers; got {args.scales!r}.") from None
    for name in ("batch_size", "max_batches"):
        validation.check_positive_int(getattr(args, name), "--" + name.replace("_", "-"),
                                      allow_none=True)
    from keras_segattn import data

    if preset:
        model, preset_info = model_source.load_preset(model_arg, args.cache_dir)
        if args.dataset is None:
            args.dataset = preset_info.get("dataset") or "synthetic"
        if protocol != "none" and not preset_info.get("evaluation") and args.protocol is None:
            protocol = "none"  # a user's own preset without a recorded protocol
    else:
        model, preset_info = None, {}
    info = data.dataset_info(args.dataset)
    settings = model_source.inference_settings(
        preset_info, protocol, mode=args.mode, crop_size=args.crop_size, stride=args.stride,
        scales=scales, flip=args.flip)
    if settings["mode"] == "slide" and settings["crop_size"] is None:
        raise ValueError("--mode slide needs --crop-size HxW (and optionally --stride).")
    from keras_segattn import inference

    inference.check_options(settings["mode"], settings["crop_size"], settings["stride"],
                            settings["scales"] or inference.DEFAULT_SCALES)
    import keras

    import keras_segattn.models  # noqa: F401  (registers the classes for load_model)
    from keras_segattn import evaluation

    if model is None:
        model = keras.saving.load_model(model_arg, compile=False)
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and num_classes != info.num_classes:
        raise ValueError(f"the model predicts {num_classes} classes but dataset "
                         f"{args.dataset!r} has {info.num_classes}; choose the preset's "
                         "dataset with --dataset.")
    kwargs = {k: v for k, v in (("data_dir", args.data_dir), ("manual_dir", args.manual_dir),
                                ("config", args.dataset_config)) if v}
    # A protocol resizes the images only (labels keep their size, as mmseg evaluates);
    # without one the dataset's pipeline rescales images and labels to its test scale.
    eval_scale = None if settings["scale"] is not None else info.scale
    dataset = data.make_pipeline(data.load(args.dataset, args.split, **kwargs), training=False,
                                 batch_size=args.batch_size, eval_scale=eval_scale,
                                 num_classes=info.num_classes, name=args.dataset)
    with validation.one_line_errors():
        result = evaluation.evaluate(
            model, dataset, info.num_classes, class_names=info.class_names,
            max_batches=args.max_batches, verbose=True, **settings)
    print(result)
    where = f"protocol={protocol} " if preset else ""
    print(f"{result['num_images']} images, {result['seconds']:.1f} s, {where}"
          f"{model_source.describe(settings)}")
    return 0

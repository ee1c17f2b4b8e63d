"""``keras-segattn evaluate``: mIoU / mAcc / aAcc and the per-class table of a saved model."""

import argparse
import json
import os
import sys


def _pair(text):
    from keras_segattn.common import pair_argument

    return pair_argument(text)


def add_arguments(parser):
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("model_path", help="a .keras model saved by `keras-segattn train`")
    parser.add_argument("--dataset", help="dataset name (default: the one the run in the "
                        "model's folder was trained on, read from its config.json; else synthetic)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--data-dir")
    parser.add_argument("--manual-dir")
    parser.add_argument("--dataset-config", help="builder config, e.g. synthetic: 32px "
                        "(default: from the run's config.json when evaluating that dataset)")
    parser.add_argument("--mode", default="whole", choices=("whole", "slide", "multiscale"))
    parser.add_argument("--crop-size", type=_pair, help="sliding-window size HxW (slide mode)")
    parser.add_argument("--stride", type=_pair, help="sliding-window step HxW")
    parser.add_argument("--scales", default="0.5,0.75,1.0,1.25,1.5,1.75",
                        help="comma-separated ratios for multiscale mode")
    parser.add_argument("--flip", action="store_true", help="average with horizontal flip")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-batches", type=int, default=None)


def _defaults_from_run(args):
    """Fill dataset, config and data dir from the ``config.json`` that ``keras-segattn
    train`` saves beside ``model.keras``, so a run evaluates on what it trained on."""
    path = os.path.join(os.path.dirname(os.path.abspath(args.model_path)), "config.json")
    run_config = {}
    if os.path.isfile(path):
        with open(path) as f:
            run_config = json.load(f)
    if args.dataset is None:
        args.dataset = run_config.get("dataset") or "synthetic"
    if args.dataset == run_config.get("dataset"):
        for key in ("dataset_config", "data_dir", "manual_dir"):
            if getattr(args, key) is None and run_config.get(key):
                setattr(args, key, run_config[key])


def run(args):
    try:
        if not os.path.exists(args.model_path):
            raise ValueError(f"model file {args.model_path!r} does not exist.")
        _defaults_from_run(args)
        from keras_segattn import data

        info = data.dataset_info(args.dataset)
        if args.manual_dir and not os.path.isdir(args.manual_dir):
            raise ValueError(f"--manual-dir {args.manual_dir!r} does not exist or is not a "
                             "directory.")
        scales = tuple(float(s) for s in args.scales.split(",") if s)
        if args.mode == "slide" and args.crop_size is None:
            raise ValueError("--mode slide needs --crop-size HxW (and optionally --stride).")
    except ValueError as e:
        print(f"keras-segattn evaluate: error: {e}", file=sys.stderr)
        return 2
    import keras

    import keras_segattn.models  # noqa: F401  (registers the classes for load_model)
    from keras_segattn import evaluation

    model = keras.saving.load_model(args.model_path, compile=False)
    kwargs = {k: v for k, v in (("data_dir", args.data_dir), ("manual_dir", args.manual_dir),
                                ("config", args.dataset_config)) if v}
    dataset = data.make_pipeline(data.load(args.dataset, args.split, **kwargs), training=False,
                                 batch_size=args.batch_size, eval_scale=info.scale,
                                 num_classes=info.num_classes, name=args.dataset)
    result = evaluation.evaluate(model, dataset, info.num_classes, class_names=info.class_names,
                                 mode=args.mode, crop_size=args.crop_size, stride=args.stride,
                                 scales=scales, flip=args.flip, max_batches=args.max_batches,
                                 verbose=True)
    print(result)
    print(f"{result['num_images']} images, {result['seconds']:.1f} s, mode={args.mode}")
    return 0

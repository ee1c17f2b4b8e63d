"""``keras-segattn predict INPUTS... --model MODEL [--output-dir DIR]``

``MODEL`` is a saved model (``.keras``, SavedModel directory, ``.tflite``) or a preset (a
name from ``keras_segattn.models.list_presets()``, e.g. ``danet_resnet101_cityscapes``, or a
preset directory). A preset brings its palette, class names (written to ``legend.json``) and
its evaluation protocol (mmseg's test resize, whole or sliding window), which the options
override.

Exits 0 when every input was segmented, 1 when any input failed (unreadable image, a
folder without images, a pattern that matches nothing: each is listed on stderr), 2 for bad
arguments.
"""

from keras_segattn.cli.model_source import PROTOCOL_CHOICES


def add_arguments(parser):
    parser.add_argument("inputs", nargs="+", help="image files, folders and/or glob patterns")
    parser.add_argument("--model", required=True,
                        help="a .keras file, a SavedModel directory, a .tflite file, a preset "
                             "name (e.g. danet_resnet101_cityscapes; downloaded once) or a "
                             "preset directory")
    parser.add_argument("--output-dir", default="predictions",
                        help="where the results are written (default: %(default)s)")
    parser.add_argument("--palette", default=None,
                        choices=("cityscapes", "ade20k", "voc", "synthetic"),
                        help="colours of the class masks (default: the preset's, else "
                             "synthetic)")
    parser.add_argument("--protocol", default=None, choices=PROTOCOL_CHOICES,
                        help="a preset's test protocol: single_scale (its keep-ratio resize, "
                             "whole or sliding window; the default for a preset), ms_flip "
                             "(multi-scale + flip) or none (the image as it is)")
    parser.add_argument("--mode", default=None, choices=("whole", "slide", "multiscale"),
                        help="whole image, sliding window or multi-scale (default: the "
                             "preset's protocol, else whole)")
    parser.add_argument("--crop", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="sliding-window size (required for --mode slide unless the model has "
                             "a fixed size or the preset gives one)")
    parser.add_argument("--stride", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="sliding-window step (default: the preset's, else the crop size)")
    parser.add_argument("--scales", nargs="+", type=float, default=None,
                        help="multi-scale factors (default: 0.5 0.75 1.0 1.25 1.5 1.75)")
    parser.add_argument("--flip", action="store_true", help="also average the flipped image")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default: %(default)s)")
    parser.add_argument("--cache-dir", default=None,
                        help="preset cache (default: $KERAS_SEGATTN_CACHE, else "
                             "~/.keras/keras_segattn)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _write_legend(output_dir, class_names, palette):
    """``legend.json``: ``[{"index", "name", "color"}]`` for the class maps and colours."""
    import json
    import os

    import numpy as np

    from keras_segattn.palettes import get_palette

    colors = get_palette(palette) if isinstance(palette, str) else np.asarray(palette)
    legend = [{"index": i, "name": name,
               "color": [int(c) for c in colors[i]] if i < len(colors) else None}
              for i, name in enumerate(class_names)]
    path = os.path.join(output_dir, "legend.json")
    with open(path, "w", encoding="utf-8") as file:
        json.dump(legend, file, indent=1)
    return path


def run(args):
    import logging
    import sys

    from keras_segattn import validation
    from keras_segattn.cli import model_source
    from keras_segattn.inference import predict_files

    preset = model_source.is_preset(args.model)
    protocol = model_source.default_protocol(args.protocol, preset)
    if args.model.endswith(".keras"):
        validation.check_keras_file(args.model)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    info = {}
    model = args.model
    if preset:
        model, info = model_source.load_preset(args.model, args.cache_dir)
        if protocol != "none" and not info.get("evaluation"):
            protocol = "none" if args.protocol is None else protocol  # a user's own preset
    settings = model_source.inference_settings(
        info, protocol, mode=args.mode, crop_size=args.crop, stride=args.stride,
        scales=args.scales, flip=args.flip)
    palette = args.palette or info.get("palette") or "synthetic"
    print(f"predict: {model_source.describe(settings)}", file=sys.stderr)
    result = predict_files(
        model, args.inputs, args.output_dir, palette=palette, alpha=args.alpha,
        progress=not args.no_progress, **settings,
    )
    if info.get("class_names") and result["written"]:
        _write_legend(args.output_dir, info["class_names"], palette)
    failed = result["failed"]
    print(f"segmented {len(result['written'])} image(s) -> {args.output_dir}; "
          f"{len(failed)} failed", file=sys.stderr)
    for path, message in failed:
        print(f"failed: {path}: {message}", file=sys.stderr)
    if not result["written"] and not failed:
        raise ValueError(f"no images found in {' '.join(args.inputs)}.")
    return 1 if failed else 0

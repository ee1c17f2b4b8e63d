"""``--model`` of ``predict`` and ``evaluate``: a saved model or a preset, and its protocol.

A value names one of:

* a saved model: a ``.keras`` / ``.h5`` / ``.tflite`` file or a SavedModel directory;
* a preset directory (``config.json`` + ``model.weights.h5``, written by
  ``keras_segattn.models.save_to_preset`` or by ``from_preset``'s cache);
* a built-in preset name (``keras_segattn.models.list_presets()``), downloaded and converted
  once by ``keras_segattn.models.from_preset``.

For a preset, the class names, palette, dataset and evaluation protocol come from its
information (``keras_segattn.models.preset_info``). Nothing here imports Keras at module
level (the command line starts without a framework).
"""

import os

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".tflite")
PROTOCOL_CHOICES = ("single_scale", "ms_flip", "none")


def is_preset_directory(path):
    """A directory with ``config.json`` and ``model.weights.h5`` (KerasHub's layout)."""
    return (os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))
            and os.path.isfile(os.path.join(path, "model.weights.h5")))


def is_preset(value):
    """Whether ``--model value`` is a preset (directory or name) rather than a saved model."""
    if os.path.exists(value):
        return is_preset_directory(value)
    return not (value.endswith(MODEL_FILE_SUFFIXES) or os.sep in value or "/" in value)


def load_preset(value, cache_dir=None):
    """``(model, info)`` of a preset name or directory; ``info`` is ``preset_info`` (``{}``
    for a preset directory without ``metadata.json``). An unknown name raises the one-line
    ``ValueError`` of ``from_preset`` (close matches and ``list_presets()``)."""
    from keras_segattn.models import presets

    info = {}
    if not os.path.isdir(value) or os.path.isfile(os.path.join(value, presets.METADATA_FILE)):
        info = presets.preset_info(value)  # an unknown name fails here, before any download
    model = presets.from_preset(value, cache_dir=cache_dir)
    return model, info


def inference_settings(info, protocol, mode=None, crop_size=None, stride=None, scales=None,
                       flip=False, default_scales=None):
    """Keyword arguments of ``predict_logits``/``evaluate``: the preset's ``protocol``
    (``"single_scale"``, ``"ms_flip"``; ``"none"`` or no ``info``: plain whole-image
    inference), then every option given explicitly on the command line on top.

    Returns ``{mode, crop_size, stride, scale, scales, flip}``.
    """
    from keras_segattn.inference import DEFAULT_SCALES
    from keras_segattn.models import evaluation_protocol

    default_scales = tuple(default_scales or DEFAULT_SCALES)
    settings = {"mode": "whole", "crop_size": None, "stride": None, "scale": None,
                "scales": default_scales, "flip": False}
    if protocol != "none":
        settings.update(evaluation_protocol(info, protocol))
    if mode is not None and mode != settings["mode"]:
        settings["mode"] = mode
        if mode == "whole" and crop_size is None:  # a window left over would slide
            settings.update(crop_size=None, stride=None)
        if mode == "multiscale" and settings["scales"] == (1.0,):
            settings["scales"] = default_scales
    if crop_size is not None:
        settings["crop_size"] = tuple(crop_size)
    if stride is not None:
        settings["stride"] = tuple(stride)
    if scales is not None:
        settings["scales"] = tuple(scales)
    if flip:
        settings["flip"] = True
    return settings


def default_protocol(protocol, preset):
    """``--protocol`` as given, else ``"single_scale"`` for a preset and ``"none"`` for a
    saved model (which records no protocol); a protocol for a saved model is refused."""
    if protocol is None:
        return "single_scale" if preset else "none"
    if protocol != "none" and not preset:
        raise ValueError(f"--protocol {protocol} needs a preset (a name or a preset directory) "
                         "as --model: a saved model records no evaluation protocol; use "
                         "--mode/--crop/--stride/--scales/--flip.")
    return protocol


def describe(settings):
    """``mode=slide crop=769x769 stride=513x513 scale=2049x1025``: one line for the log."""
    parts = [f"mode={settings['mode']}"]
    for key in ("crop_size", "stride", "scale"):
        if settings.get(key) is not None:
            parts.append(f"{key.split('_')[0]}={'x'.join(str(v) for v in settings[key])}")
    if settings["mode"] == "multiscale":
        parts.append("scales=" + ",".join(f"{s:g}" for s in settings["scales"]))
    if settings["flip"]:
        parts.append("flip")
    return " ".join(parts)

"""The backbone contract of the segmenter: pyramid features and the input normalisation.

A backbone is any ``keras.Model`` whose graph exposes the four stage outputs ``P2``..``P5``
(strides 4, 8, 16, 32 before dilation; KerasCV/KerasHub naming) in one of three ways:

* ``pyramid_outputs``: a dict ``{"P2": tensor, ...}`` of symbolic tensors of its graph
  (KerasHub ``FeaturePyramidBackbone``, and every backbone of this package);
* ``pyramid_level_inputs``: a dict ``{"P2": layer_name, ...}`` (KerasCV ``Backbone``; the
  backbones of this package also set it, for code written against KerasCV);
* a functional model whose output is a dict with those keys.

``pyramid_outputs(backbone)`` returns the symbolic tensors in every case, so
``keras.Model(backbone.inputs, pyramid_outputs(backbone))`` is a feature extractor sharing the
backbone's weights. When the keys are not ``P2``..``P5`` (KerasHub's MiT names its stride
4..32 outputs ``P1``..``P4``; EfficientNet adds a stride-2 ``P1``), the levels are named by
their measured stride, ``P<n>`` for stride ``2**n``, as KerasHub documents them
(``feature_strides``).

``input_normalization(backbone)`` says what the backbone expects of an RGB image in
``[0, 255]``: ``{"mean": (r, g, b), "std": (r, g, b)}`` in pixel units, so the model applies
``(x - mean) / std`` once (``layers.ImageNormalization``). A backbone declares it with an
``input_normalization`` attribute (a dict with those keys, stored in its ``get_config()`` so
a saved model rebuilds with it); without one, the ImageNet statistics of mmsegmentation
(``IMAGENET_NORMALIZATION``) are assumed. ``normalization_from_converter`` reads it from a
KerasHub ``ImageConverter`` (``y = x * scale + offset``); ``UNIT_SCALING`` is ``x / 255``
(KerasCV ``include_rescaling=True``) and ``NO_NORMALIZATION`` the identity (a backbone that
rescales its input itself).
"""

import math

import keras

from keras_segattn.layers.normalization import IMAGENET_MEAN, IMAGENET_STD

LEVELS = ("P2", "P3", "P4", "P5")

IMAGENET_NORMALIZATION = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
UNIT_SCALING = {"mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}
NO_NORMALIZATION = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}

# Side of the square probe image used to measure strides when the input size is dynamic.
_PROBE_SIZE = 256


def _per_channel(value, name, what):
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"{what}: {name} must be a number or 3 numbers (R, G, B), got {value!r}."
        )
    return values


def check_normalization(value, what="input_normalization"):
    """Canonical ``{"mean": [3 floats], "std": [3 floats]}`` (JSON-serializable) from a dict
    with ``mean``/``std`` (numbers or 3 numbers, pixel units) or a KerasHub
    ``ImageConverter``; ``None`` stays ``None``.

    Raises:
        ValueError / TypeError: naming the value and what is expected.
    """
    if value is None:
        return None
    if hasattr(value, "scale") and hasattr(value, "offset") and not isinstance(value, dict):
        return normalization_from_converter(value)
    if not isinstance(value, dict) or set(value) != {"mean", "std"}:
        raise TypeError(
            f"{what} must be a dict {{'mean': ..., 'std': ...}} in pixel units for RGB input in "
            f"[0, 255] (or a KerasHub ImageConverter), got {value!r}."
        )
    mean = _per_channel(value["mean"], "mean", what)
    std = _per_channel(value["std"], "std", what)
    if any(s <= 0 for s in std):
        raise ValueError(f"{what}: std values must be positive, got {std}.")
    return {"mean": mean, "std": std}


def normalization_from_converter(converter):
    """``{"mean", "std"}`` in pixel units equivalent to a KerasHub ``ImageConverter``.

    The converter computes ``y = x * scale + offset`` (``scale``/``offset``: a number, 3
    numbers or ``None``), which is ``(x - mean) / std`` with ``std = 1 / scale`` and
    ``mean = -offset / scale``.
    """
    scale = getattr(converter, "scale", None)
    offset = getattr(converter, "offset", None)
    scale = [1.0] * 3 if scale is None else _per_channel(scale, "scale", "image converter")
    offset = [0.0] * 3 if offset is None else _per_channel(offset, "offset", "image converter")
    if any(s <= 0 for s in scale):
        raise ValueError(f"image converter: scale must be positive, got {scale}.")
    return {"mean": [-o / s for o, s in zip(offset, scale)], "std": [1.0 / s for s in scale]}


def input_normalization(backbone):
    """``{"mean": (3 floats), "std": (3 floats)}`` in pixel units for RGB input in [0, 255]."""
    declared = getattr(backbone, "input_normalization", None)
    declared = check_normalization(declared) if declared is not None else IMAGENET_NORMALIZATION
    return {"mean": tuple(declared["mean"]), "std": tuple(declared["std"])}


def _declared_tensors(backbone):
    """``{key: tensor}`` as the backbone declares them (any keys), or ``{}``."""
    tensors = getattr(backbone, "pyramid_outputs", None)
    if isinstance(tensors, dict) and tensors:
        return dict(tensors)
    names = getattr(backbone, "pyramid_level_inputs", None)
    if isinstance(names, dict) and names:
        layer_names = {layer.name for layer in backbone.layers}
        unknown = {key: name for key, name in names.items() if name not in layer_names}
        if unknown:
            raise ValueError(
                f"backbone {backbone.name!r}: pyramid_level_inputs {unknown} name no layer of "
                "the model."
            )
        return {key: backbone.get_layer(name).output for key, name in names.items()}
    output = getattr(backbone, "output", None) if isinstance(backbone, keras.Model) else None
    if isinstance(output, dict):
        return dict(output)
    return {}


def feature_strides(backbone, tensors):
    """``{key: stride}`` of symbolic tensors of ``backbone``'s graph, measured on a probe input
    (the backbone's own size, or 256x256 when it is dynamic): ``input size / feature size``."""
    if len(backbone.inputs) != 1 or len(backbone.inputs[0].shape) != 4:
        raise ValueError(
            f"backbone {backbone.name!r}: expected one image input (B, H, W, C), got inputs "
            f"{[tuple(t.shape) for t in backbone.inputs]}."
        )
    _, height, width, channels = backbone.inputs[0].shape
    height, width = height or _PROBE_SIZE, width or _PROBE_SIZE
    probe = keras.Model(backbone.inputs, dict(tensors))
    spec = probe.compute_output_spec(keras.KerasTensor((1, height, width, channels)))
    strides = {}
    for key, value in spec.items():
        if len(value.shape) != 4:
            raise ValueError(
                f"backbone {backbone.name!r}: pyramid output {key!r} has shape {value.shape}; "
                "expected a (B, H, W, C) feature map."
            )
        strides[key] = height / value.shape[1]
    return strides


def _by_stride(backbone, tensors, levels):
    strides = feature_strides(backbone, tensors)
    found = {}
    for key, stride in strides.items():
        exponent = round(math.log2(stride)) if stride > 0 else None
        if exponent is None or abs(stride / 2**exponent - 1) > 0.1:
            raise ValueError(
                f"backbone {backbone.name!r}: its pyramid output {key!r} has stride {stride:g}, "
                "not a power of two, so it cannot serve as one of the levels "
                f"{list(levels)} (strides 4, 8, 16, 32)."
            )
        level = f"P{exponent}"
        if level in found:
            raise ValueError(
                f"backbone {backbone.name!r}: pyramid outputs {found[level][0]!r} and {key!r} "
                f"both have stride {stride:g}; name them {list(levels)} explicitly."
            )
        found[level] = (key, tensors[key])
    return {level: value[1] for level, value in found.items()}


def pyramid_outputs(backbone, levels=LEVELS):
    """``{level: symbolic tensor}`` of the backbone's stage outputs for the given levels.

    Raises:
        ValueError: naming the backbone and the missing levels when it exposes neither
            ``pyramid_outputs``, ``pyramid_level_inputs`` nor a dict output with those levels
            (by name, or by measured stride).
    """
    tensors = _declared_tensors(backbone)
    if tensors and not all(level in tensors for level in levels):
        tensors = _by_stride(backbone, tensors, levels)
    found = {level: tensors[level] for level in levels if level in tensors}
    missing = [level for level in levels if level not in found]
    if missing:
        raise ValueError(
            f"backbone {getattr(backbone, 'name', backbone)!r} ({type(backbone).__name__}) must "
            f"expose the pyramid levels {list(levels)} as `pyramid_outputs` (KerasHub), "
            f"`pyramid_level_inputs` (KerasCV) or a dict output; missing {missing}."
        )
    return found

"""The backbone contract of the segmenter: pyramid features and the input normalisation.

A backbone is any ``keras.Model`` whose graph exposes the four stage outputs ``P2``..``P5``
(strides 4, 8, 16, 32 before dilation; KerasCV/KerasHub naming) in one of two ways:

* ``pyramid_outputs``: a dict ``{"P2": tensor, ...}`` of symbolic tensors of its graph
  (KerasHub ``FeaturePyramidBackbone``);
* ``pyramid_level_inputs``: a dict ``{"P2": layer_name, ...}`` (KerasCV ``Backbone`` and the
  dilated backbones of this package).

``pyramid_outputs(backbone)`` returns the symbolic tensors in either case, so
``keras.Model(backbone.inputs, pyramid_outputs(backbone))`` is a feature extractor sharing the
backbone's weights.

``input_normalization(backbone)`` says what the backbone expects of an RGB image in
``[0, 255]``: ``{"mean": (r, g, b), "std": (r, g, b)}`` in pixel units, so the model applies
``(x - mean) / std`` once (``layers.ImageNormalization``). A backbone declares it with an
``input_normalization`` attribute (a dict with those keys); without one, the ImageNet
statistics of mmsegmentation and KerasCV ImageNet presets are assumed.
"""

from keras_segattn.layers.normalization import IMAGENET_MEAN, IMAGENET_STD

LEVELS = ("P2", "P3", "P4", "P5")


def pyramid_outputs(backbone, levels=LEVELS):
    """``{level: symbolic tensor}`` of the backbone's stage outputs for the given levels.

    Raises:
        ValueError: naming the backbone and the missing levels when it exposes neither
            ``pyramid_outputs`` nor ``pyramid_level_inputs`` with those keys.
    """
    tensors = getattr(backbone, "pyramid_outputs", None)
    names = getattr(backbone, "pyramid_level_inputs", None)
    if isinstance(tensors, dict) and tensors:
        found = {level: tensors[level] for level in levels if level in tensors}
    elif isinstance(names, dict) and names:
        layer_names = {layer.name for layer in backbone.layers}
        unknown = {level: names[level] for level in levels
                   if level in names and names[level] not in layer_names}
        if unknown:
            raise ValueError(
                f"backbone {backbone.name!r}: pyramid_level_inputs {unknown} name no layer of "
                "the model."
            )
        found = {level: backbone.get_layer(names[level]).output for level in levels
                 if level in names}
    else:
        found = {}
    missing = [level for level in levels if level not in found]
    if missing:
        raise ValueError(
            f"backbone {getattr(backbone, 'name', backbone)!r} ({type(backbone).__name__}) must "
            f"expose the pyramid levels {list(levels)} as `pyramid_outputs` (KerasHub) or "
            f"`pyramid_level_inputs` (KerasCV); missing {missing}."
        )
    return found


def input_normalization(backbone):
    """``{"mean": (3 floats), "std": (3 floats)}`` in pixel units for RGB input in [0, 255]."""
    declared = getattr(backbone, "input_normalization", None)
    if declared is None:
        return {"mean": tuple(IMAGENET_MEAN), "std": tuple(IMAGENET_STD)}
    return {"mean": tuple(float(m) for m in declared["mean"]),
            "std": tuple(float(s) for s in declared["std"])}

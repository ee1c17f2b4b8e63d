"""Backbones passed in as instances: respected, not silently used as they come.

``adapt_backbone(backbone, output_stride, ...)`` (what ``get_backbone`` does with a
``keras.Model``) returns a backbone that honours ``output_stride`` and declares its input
normalisation, or raises:

* **ResNets we can dilate** -- a KerasHub ``ResNetBackbone``, a KerasCV ``ResNetBackbone`` /
  ``ResNetV2Backbone`` (when ``keras_cv`` is installed), or any backbone of this package -- are
  rebuilt dilated at ``output_stride`` (``DilatedKerasHubResNetBackbone``,
  ``DilatedResNetBackbone`` / ``DilatedResNetV2Backbone``, ``DilatedResNetV1cBackbone``) with a
  copy of their weights; the instance itself is not changed. A KerasCV backbone built with
  ``include_rescaling=True`` is rebuilt without its ``Rescaling(1/255)`` layer and declares
  ``x / 255`` as its input normalisation, so the model applies exactly one normalisation
  (``x / 255``, as the backbone did). A KerasHub backbone carries no normalisation (its preset's
  image converter is separate): ImageNet mean/std, the statistics of every KerasHub ResNet
  preset, unless ``input_normalization=`` says otherwise.
* **Any other pyramid backbone** -- a KerasHub ``FeaturePyramidBackbone`` (MiT, EfficientNet,
  CSPNet, DenseNet ...), a KerasCV backbone with ``pyramid_level_inputs``, or a functional
  model whose output is a dict ``{"P2": ..., "P5": ...}`` -- is wrapped in ``PyramidBackbone``,
  which exposes ``P2``..``P5`` (named by measured stride when the backbone names them
  otherwise, e.g. MiT's ``P1``..``P4``), records the backbone's output stride and input
  normalisation, and serializes the backbone as a nested object. These cannot be dilated:
  ``output_stride`` must equal the backbone's own stride (its P5 stride, 32 for all of the
  above), else a ``ValueError`` says so; ``output_stride=None`` runs at the backbone's stride
  and warns that it does. A backbone whose first layer rescales its input
  (``include_rescaling=True``, or a leading ``Rescaling``/``Normalization`` layer) declares no
  further normalisation (``NO_NORMALIZATION``): its own is used instead of ours.
"""

import re
import warnings

import keras
import keras_hub

from keras_segattn.backbones import pyramid, weights
from keras_segattn.backbones.dilation import validate_multi_grid, validate_output_stride
from keras_segattn.backbones.kerascv_resnet import from_kerascv_resnet, kerascv_resnet_class
from keras_segattn.backbones.kerashub_resnet import (
    DilatedKerasHubResNetBackbone,
    from_kerashub_resnet,
)
from keras_segattn.backbones.resnet_v1c import DilatedResNetV1cBackbone


@keras.saving.register_keras_serializable(package="keras_segattn")
class PyramidBackbone(keras_hub.models.FeaturePyramidBackbone):
    """A backbone with pyramid features adapted to the segmenter contract.

    Wraps ``backbone`` (called as one nested model, so its weights are shared with the
    instance): ``pyramid_outputs`` are ``P2``..``P5`` (``keras_segattn.backbones.pyramid_outputs``
    of the wrapped backbone, each through an ``Identity`` layer named after the level, which
    ``pyramid_level_inputs`` names), and the model's output is ``P5``.

    Args:
        backbone: a ``keras.Model`` with pyramid features (see the module docstring), or its
            serialized config.
        output_stride: the stride of ``P5`` (measured by ``adapt_backbone``).
        input_normalization: what the backbone expects of RGB input in ``[0, 255]``
            (default ``None``: ImageNet mean/std).

    Example:
    ```python
    mit = keras_hub.models.MiTBackbone(...)                    # P1..P4 at strides 4..32
    backbone = get_backbone(mit, output_stride=32)             # a PyramidBackbone
    model = keras_segattn.models.DANet(num_classes=19, backbone=backbone, output_stride=32)
    ```
    """

    def __init__(self, backbone, output_stride, input_normalization=None, **kwargs):
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        features = pyramid.pyramid_outputs(backbone)
        extractor = keras.Model(backbone.inputs, features, name=f"{backbone.name}_pyramid")
        inputs = keras.layers.Input(shape=tuple(backbone.inputs[0].shape[1:]))
        nested = extractor(inputs)
        outputs = {level: keras.layers.Identity(name=level)(nested[level])
                   for level in pyramid.LEVELS}
        super().__init__(inputs=inputs, outputs=outputs["P5"], **kwargs)
        self.backbone = backbone
        self.output_stride = int(output_stride)
        self.input_normalization = pyramid.check_normalization(input_normalization)
        self.pyramid_outputs = outputs
        self.pyramid_level_inputs = {level: level for level in pyramid.LEVELS}

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "output_stride": self.output_stride,
            "input_normalization": self.input_normalization,
        })
        return config


def _rescales_itself(backbone):
    """True when the backbone normalises its input itself (KerasCV ``include_rescaling``, or a
    ``Rescaling``/``Normalization`` layer right after the input)."""
    if getattr(backbone, "include_rescaling", False):
        return True
    layers = [layer for layer in backbone.layers
              if not isinstance(layer, keras.layers.InputLayer)]
    return bool(layers) and isinstance(layers[0], (keras.layers.Rescaling,
                                                  keras.layers.Normalization))


def _rebuilt_name(name, output_stride):
    return f"{re.sub(r'_os(8|16|32)$', '', name)}_os{output_stride}"


def _same_shape(backbone, input_shape):
    return input_shape is None or tuple(backbone.input_shape[1:]) == tuple(input_shape)


def _rebuild_v1c(backbone, output_stride, multi_grid, input_normalization, input_shape):
    config = backbone.get_config()
    config.update(output_stride=output_stride, multi_grid=multi_grid,
                  name=_rebuilt_name(backbone.name, output_stride))
    if input_normalization is not None:
        config["input_normalization"] = input_normalization
    if input_shape is not None:
        config["input_shape"] = tuple(input_shape)
    model = DilatedResNetV1cBackbone.from_config(config)
    weights.copy_weights_by_name(backbone, model, f"backbone {backbone.name!r}")
    return model


def adapt_backbone(backbone, output_stride=8, multi_grid=None, input_normalization=None,
                   input_shape=None):
    """A backbone instance made to honour ``output_stride`` (see the module docstring).

    Args:
        backbone: a ``keras.Model``.
        output_stride: 8, 16, 32, or ``None``: the backbone as it is (at its own stride).
        multi_grid: last-stage dilation multipliers (ResNets only).
        input_normalization: overrides what the backbone declares or is detected.
        input_shape: the model's input shape; a rebuilt ResNet takes it (default: the
            backbone's).

    Returns:
        The backbone itself when it already matches, else a rebuilt or wrapped backbone.

    Raises:
        ValueError: an output stride the backbone cannot honour, or no pyramid features.
    """
    if output_stride is not None:
        output_stride = validate_output_stride(output_stride)
    multi_grid = validate_multi_grid(multi_grid)
    input_normalization = pyramid.check_normalization(input_normalization)

    resnet = (DilatedKerasHubResNetBackbone, DilatedResNetV1cBackbone,
              keras_hub.models.ResNetBackbone)
    if isinstance(backbone, resnet) or kerascv_resnet_class(backbone) is not None:
        own = getattr(backbone, "output_stride", 32)
        unchanged = (
            output_stride in (None, own)
            and (multi_grid is None or multi_grid == getattr(backbone, "multi_grid", None))
            and input_normalization is None
            and _same_shape(backbone, input_shape)
            and hasattr(backbone, "input_normalization")  # one of ours
            and not getattr(backbone, "include_rescaling", False)
        )
        if unchanged:
            return backbone
        output_stride = own if output_stride is None else output_stride
        if multi_grid is None:
            multi_grid = getattr(backbone, "multi_grid", None)
        if isinstance(backbone, DilatedResNetV1cBackbone):
            return _rebuild_v1c(backbone, output_stride, multi_grid, input_normalization,
                                input_shape)
        rebuild = from_kerascv_resnet if kerascv_resnet_class(backbone) else from_kerashub_resnet
        return rebuild(backbone, output_stride, multi_grid, input_normalization, input_shape,
                       name=_rebuilt_name(backbone.name, output_stride))

    if isinstance(backbone, PyramidBackbone):
        own = backbone.output_stride
        if output_stride not in (None, own):
            raise _stride_error(backbone.backbone, own, output_stride)
        if input_normalization is None or input_normalization == backbone.input_normalization:
            return backbone
        return PyramidBackbone(backbone.backbone, own, input_normalization,
                               name=backbone.name)

    if multi_grid is not None:
        raise ValueError(
            f"multi_grid={multi_grid} needs a ResNet backbone this package can dilate; "
            f"{backbone.name!r} is a {type(backbone).__name__}."
        )
    features = pyramid.pyramid_outputs(backbone)
    own = int(round(pyramid.feature_strides(backbone, {"P5": features["P5"]})["P5"]))
    if output_stride is None:
        warnings.warn(
            f"keras_segattn: backbone {backbone.name!r} ({type(backbone).__name__}) cannot be "
            f"dilated; it runs at its own output stride {own} (output_stride=None).",
            stacklevel=3,
        )
    elif output_stride != own:
        raise _stride_error(backbone, own, output_stride)
    if input_normalization is None and _rescales_itself(backbone):
        input_normalization = pyramid.NO_NORMALIZATION
    if input_normalization is None:
        input_normalization = pyramid.check_normalization(
            getattr(backbone, "input_normalization", None))
    return PyramidBackbone(backbone, own, input_normalization,
                           name=f"{backbone.name}_pyramid")


def _stride_error(backbone, own, requested):
    return ValueError(
        f"backbone {backbone.name!r} ({type(backbone).__name__}) has output stride {own} and "
        f"cannot be dilated to output_stride={requested}: only ResNets (KerasHub, KerasCV and "
        f"this package's) are rebuilt dilated. Build the model with output_stride={own}, or "
        "output_stride=None to run at the backbone's own stride."
    )

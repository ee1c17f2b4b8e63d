"""Dilated ResNets with KerasCV 0.9's layouts (``resnet_tiny``, saved models, KerasCV instances).

Before KerasHub, this package built its ResNets on KerasCV's ``ResNetBackbone`` /
``ResNetV2Backbone`` (keras-team/keras-cv 0.9.0, ``keras_cv/src/models/backbones/
resnet_v{1,2}/resnet_v{1,2}_backbone.py``). KerasCV is no longer developed and is an optional
dependency now; these classes rebuild its graphs **without importing it**, with exactly
KerasCV's layers, layer order and layer names, changing only strides and dilation rates:

* ``DilatedResNetBackbone`` (V1, ResNet v1.0: the stride on the bottleneck's first 1x1 conv,
  "same" padding, BN epsilon 1.001e-5);
* ``DilatedResNetV2Backbone`` (V2: pre-activation, the stride on each stage's *last* block).

They serve three purposes: ``resnet_tiny`` / ``resnet_tiny_v2`` (the small networks of the
tests, the CLI default and the measured learning results), models saved before the KerasHub
backbones (their configs name these classes, so they load unchanged), and KerasCV
``ResNetBackbone`` / ``ResNetV2Backbone`` instances passed to ``get_backbone``, which are rebuilt
dilated with their weights (``from_kerascv_resnet``). The ``*_kerascv`` names
(``resnet50_kerascv`` ...) build them at full depth: what ``resnet50`` meant before.

Dilation (``dilation.dilation_plan``; exact equivalence, see that module):

* V1 bottleneck (stride in the first 1x1 conv): at OS8 all 3x3 convs of stage 3 have dilation
  2 and of stage 4 dilation 4; at OS16 stage 4 has dilation 2.
* V1 basic block (stride in the first 3x3 conv): that conv keeps the previous rate (2 -> 1,
  4 -> 2), like torchvision.
* V2 (stride in the **last** block's 3x3 conv): stage 3 already runs at stride 8 until its last
  conv, so at OS8 only stage 4 is dilated (rate 2), and at OS16 only the final stride is
  removed (no dilation at all). KerasCV's own ``stackwise_dilations=[1,1,2,4]`` over-dilates
  (rate 2 in stage 3, 4 in stage 4, block 1 never dilated); it is not used.

``include_rescaling=True`` keeps KerasCV's ``Rescaling(1/255)`` as the first layer; the
backbone then declares no further input normalisation (``NO_NORMALIZATION``), so exactly one
is applied. ``from_kerascv_resnet`` instead removes that layer and declares ``x / 255``
(``UNIT_SCALING``), applied by the model's ``ImageNormalization``.
"""

import sys

import keras
import keras_hub

from keras_segattn.backbones import pyramid, weights
from keras_segattn.backbones.dilation import (
    dilation_plan, validate_multi_grid, validate_output_stride,
)
from keras_segattn.layers.batch_norm import BatchNormalization
from keras_segattn.layers.conv import Conv2D
from keras_segattn.layers.pooling import MaxPooling2D

BN_AXIS = 3
BN_EPSILON = 1.001e-5  # KerasCV / keras.applications value


# ---------------------------------------------------------------------------------------------
# Graph builders: layer-for-layer copies of KerasCV 0.9.0's V1/V2 backbones with
# strides/dilations from the plan.
# ---------------------------------------------------------------------------------------------
def _bn(name, dtype):
    return BatchNormalization(axis=BN_AXIS, epsilon=BN_EPSILON, dtype=dtype, name=name)


def _conv(filters, kernel_size, name, dtype, **kwargs):
    return Conv2D(filters, kernel_size, dtype=dtype, name=name, **kwargs)


def _relu(name, dtype):
    return keras.layers.Activation("relu", dtype=dtype, name=name)


def _v1_block(x, filters, stride, rate_before, rate_after, conv_shortcut, name, dtype):
    if conv_shortcut:
        shortcut = _conv(4 * filters, 1, name + "_0_conv", dtype, strides=stride,
                         use_bias=False)(x)
        shortcut = _bn(name + "_0_bn", dtype)(shortcut)
    else:
        shortcut = x
    x = _conv(filters, 1, name + "_1_conv", dtype, strides=stride, use_bias=False)(x)
    x = _bn(name + "_1_bn", dtype)(x)
    x = _relu(name + "_1_relu", dtype)(x)
    x = _conv(filters, 3, name + "_2_conv", dtype, padding="SAME", dilation_rate=rate_after,
              use_bias=False)(x)
    x = _bn(name + "_2_bn", dtype)(x)
    x = _relu(name + "_2_relu", dtype)(x)
    x = _conv(4 * filters, 1, name + "_3_conv", dtype, use_bias=False)(x)
    x = _bn(name + "_3_bn", dtype)(x)
    x = keras.layers.Add(dtype=dtype, name=name + "_add")([shortcut, x])
    return _relu(name + "_out", dtype)(x)


def _v1_basic_block(x, filters, stride, rate_before, rate_after, conv_shortcut, name, dtype):
    if conv_shortcut:
        shortcut = _conv(filters, 1, name + "_0_conv", dtype, strides=stride, use_bias=False)(x)
        shortcut = _bn(name + "_0_bn", dtype)(shortcut)
    else:
        shortcut = x
    x = _conv(filters, 3, name + "_1_conv", dtype, padding="SAME", strides=stride,
              dilation_rate=rate_before, use_bias=False)(x)
    x = _bn(name + "_1_bn", dtype)(x)
    x = _relu(name + "_1_relu", dtype)(x)
    x = _conv(filters, 3, name + "_2_conv", dtype, padding="SAME", dilation_rate=rate_after,
              use_bias=False)(x)
    x = _bn(name + "_2_bn", dtype)(x)
    x = keras.layers.Add(dtype=dtype, name=name + "_add")([shortcut, x])
    return _relu(name + "_out", dtype)(x)


def _v2_shortcut(x, preact, channels, stride, conv_shortcut, name, dtype):
    if conv_shortcut:
        return _conv(channels, 1, name + "_0_conv", dtype, strides=stride)(preact)
    if stride > 1:
        return keras.layers.MaxPooling2D(1, strides=stride, dtype=dtype,
                                         name=name + "_0_max_pooling")(x)
    return x


def _v2_block(x, filters, stride, rate_before, rate_after, conv_shortcut, name, dtype):
    preact = _bn(name + "_use_preactivation_bn", dtype)(x)
    preact = _relu(name + "_use_preactivation_relu", dtype)(preact)
    shortcut = _v2_shortcut(x, preact, 4 * filters, stride, conv_shortcut, name, dtype)
    x = _conv(filters, 1, name + "_1_conv", dtype, strides=1, use_bias=False)(preact)
    x = _bn(name + "_1_bn", dtype)(x)
    x = _relu(name + "_1_relu", dtype)(x)
    x = _conv(filters, 3, name + "_2_conv", dtype, strides=stride, use_bias=False,
              padding="same", dilation_rate=rate_before)(x)
    x = _bn(name + "_2_bn", dtype)(x)
    x = _relu(name + "_2_relu", dtype)(x)
    x = _conv(4 * filters, 1, name + "_3_conv", dtype)(x)
    return keras.layers.Add(dtype=dtype, name=name + "_out")([shortcut, x])


def _v2_basic_block(x, filters, stride, rate_before, rate_after, conv_shortcut, name, dtype):
    preact = _bn(name + "_use_preactivation_bn", dtype)(x)
    preact = _relu(name + "_use_preactivation_relu", dtype)(preact)
    shortcut = _v2_shortcut(x, preact, filters, stride, conv_shortcut, name, dtype)
    x = _conv(filters, 3, name + "_1_conv", dtype, padding="SAME", strides=1,
              dilation_rate=rate_before, use_bias=False)(preact)
    x = _bn(name + "_1_bn", dtype)(x)
    x = _relu(name + "_1_relu", dtype)(x)
    x = _conv(filters, 3, name + "_2_conv", dtype, strides=stride, padding="same",
              dilation_rate=rate_before, use_bias=False)(x)
    return keras.layers.Add(dtype=dtype, name=name + "_out")([shortcut, x])


_BLOCKS = {
    (1, "block"): _v1_block,
    (1, "basic_block"): _v1_basic_block,
    (2, "block"): _v2_block,
    (2, "basic_block"): _v2_basic_block,
}


def _build_graph(version, inputs, stackwise_filters, stackwise_blocks, stackwise_strides,
                 include_rescaling, block_type, output_stride, multi_grid, dtype):
    if block_type not in ("block", "basic_block"):
        raise ValueError(
            f'block_type must be "block" or "basic_block", got {block_type!r}.'
        )
    if version == 2 and min(stackwise_blocks) < 2:
        raise ValueError(
            f"ResNetV2 needs at least 2 blocks per stage (KerasCV's V2 stack names its first "
            f"block twice otherwise), got stackwise_blocks={list(stackwise_blocks)}."
        )
    block_fn = _BLOCKS[(version, block_type)]
    plan = dilation_plan(
        version, block_type, stackwise_blocks, stackwise_strides, output_stride, multi_grid
    )
    x = inputs
    if include_rescaling:
        x = keras.layers.Rescaling(1 / 255.0, dtype=dtype)(x)
    x = _conv(64, 7, "conv1_conv", dtype, strides=2, use_bias=(version == 2), padding="same")(x)
    if version == 1:
        x = _bn("conv1_bn", dtype)(x)
        x = _relu("conv1_relu", dtype)(x)
    x = MaxPooling2D(3, strides=2, padding="same", dtype=dtype, name="pool1_pool")(x)

    outputs, level_names = {}, {}
    for stage, stage_plan in enumerate(plan):
        first_shortcut = block_type == "block" or stage > 0
        for block, (stride, rate_before, rate_after) in enumerate(stage_plan):
            # KerasCV names the blocks of both versions "v2_stack_{stage}_block{n}".
            name = f"v2_stack_{stage}_block{block + 1}"
            x = block_fn(
                x, stackwise_filters[stage], stride, rate_before, rate_after,
                conv_shortcut=first_shortcut and block == 0, name=name, dtype=dtype,
            )
        outputs[f"P{stage + 2}"] = x
        level_names[f"P{stage + 2}"] = f"{name}_out"
    if version == 2:
        x = _bn("post_bn", dtype)(x)
        x = _relu("post_relu", dtype)(x)
    # The largest 3x3 dilation of each stage (V1: convs after the stride point; V2: the 3x3
    # convs sit before or at it).
    stackwise_dilations = [
        max(step[2] if version == 1 else step[1] for step in stage_plan) for stage_plan in plan
    ]
    return x, outputs, level_names, stackwise_dilations


def _parse_inputs(input_shape, input_tensor):
    if input_tensor is None:
        return keras.layers.Input(shape=tuple(input_shape))
    if not keras.backend.is_keras_tensor(input_tensor):
        return keras.layers.Input(tensor=input_tensor, shape=tuple(input_shape))
    return input_tensor


class _KerasCVLayout(keras_hub.models.FeaturePyramidBackbone):
    """The shared constructor and config of the two KerasCV-layout classes."""

    version = None

    def __init__(self, *, stackwise_filters, stackwise_blocks, stackwise_strides,
                 include_rescaling, output_stride=32, multi_grid=None,
                 input_normalization=None, input_shape=(None, None, 3), input_tensor=None,
                 block_type="block", dtype=None, **kwargs):
        output_stride = validate_output_stride(output_stride)
        multi_grid = validate_multi_grid(multi_grid)
        inputs = _parse_inputs(input_shape, input_tensor)
        x, outputs, level_names, dilations = _build_graph(
            self.version, inputs, stackwise_filters, stackwise_blocks, stackwise_strides,
            include_rescaling, block_type, output_stride, multi_grid, dtype,
        )
        super().__init__(inputs=inputs, outputs=x, dtype=dtype, **kwargs)
        self.stackwise_filters = list(stackwise_filters)
        self.stackwise_blocks = list(stackwise_blocks)
        self.stackwise_strides = list(stackwise_strides)
        self.include_rescaling = bool(include_rescaling)
        self.input_tensor = input_tensor
        self.block_type = block_type
        self.output_stride = output_stride
        self.multi_grid = multi_grid
        if input_normalization is None and include_rescaling:
            input_normalization = pyramid.NO_NORMALIZATION  # the Rescaling layer does x / 255
        self.input_normalization = pyramid.check_normalization(input_normalization)
        self.pyramid_outputs = outputs
        self.pyramid_level_inputs = level_names
        # Informational: the largest 3x3 dilation in each stage (multi-grid included).
        self.stackwise_dilations = dilations

    def get_config(self):
        config = super().get_config()
        config.update({
            "stackwise_filters": self.stackwise_filters,
            "stackwise_blocks": self.stackwise_blocks,
            "stackwise_strides": self.stackwise_strides,
            "include_rescaling": self.include_rescaling,
            "input_shape": self.input_shape[1:],
            "input_tensor": self.input_tensor,
            "block_type": self.block_type,
            "output_stride": self.output_stride,
            "multi_grid": self.multi_grid,
            "input_normalization": self.input_normalization,
        })
        return config


@keras.saving.register_keras_serializable(package="keras_segattn")
class DilatedResNetBackbone(_KerasCVLayout):
    """KerasCV ResNet V1 layout with working dilation (output stride 8/16/32).

    Identical layers, layer order, names and weight shapes to KerasCV 0.9's
    ``keras_cv.models.ResNetBackbone`` with the same ``stackwise_*``/``block_type`` arguments;
    only conv strides and dilation rates differ (see the module docstring). KerasCV weights and
    ``.weights.h5`` files of a plain KerasCV ResNet of the same depth load unchanged.

    Args:
        stackwise_filters, stackwise_blocks, stackwise_strides, include_rescaling, input_shape,
            input_tensor, block_type: as in ``keras_cv.models.ResNetBackbone``.
        output_stride: 8, 16 or 32 (32 = the plain network).
        multi_grid: optional sequence, e.g. ``(1, 2, 4)``: per-block dilation multipliers of the
            last stage (cycled over its blocks).
        input_normalization: what the weights expect of RGB input in ``[0, 255]``; default
            ImageNet mean/std, or none with ``include_rescaling=True``.
        dtype: the layers' dtype policy (default: the global policy).

    Example:
    ```python
    backbone = DilatedResNetBackbone(
        stackwise_filters=[8, 16, 32, 64], stackwise_blocks=[1, 1, 1, 1],
        stackwise_strides=[1, 2, 2, 2], include_rescaling=False, output_stride=8,
    )
    backbone(np.zeros((1, 64, 64, 3))).shape  # (1, 8, 8, 256)
    ```
    """

    version = 1


@keras.saving.register_keras_serializable(package="keras_segattn")
class DilatedResNetV2Backbone(_KerasCVLayout):
    """KerasCV ResNet V2 layout with exact-equivalence dilation (output stride 8/16/32).

    Same layers, names and weight shapes as KerasCV 0.9's ``keras_cv.models.ResNetV2Backbone``;
    the dilation rule differs from KerasCV's ``stackwise_dilations`` (see the module
    docstring), which is therefore not accepted here.

    Args:
        stackwise_filters, stackwise_blocks, stackwise_strides, include_rescaling, input_shape,
            input_tensor, block_type: as in ``keras_cv.models.ResNetV2Backbone``.
        output_stride: 8, 16 or 32 (32 = the plain network).
        multi_grid: optional per-block dilation multipliers of the last stage.
        input_normalization, dtype: as in ``DilatedResNetBackbone``.

    Example:
    ```python
    backbone = DilatedResNetV2Backbone(
        stackwise_filters=[8, 16, 32, 64], stackwise_blocks=[2, 2, 2, 2],
        stackwise_strides=[1, 2, 2, 2], include_rescaling=False, output_stride=16,
    )
    backbone(np.zeros((1, 64, 64, 3))).shape  # (1, 4, 4, 256)
    ```
    """

    version = 2

    def __init__(self, *, stackwise_dilations=None, **kwargs):
        if stackwise_dilations is not None:
            raise ValueError(
                "DilatedResNetV2Backbone derives its dilations from output_stride (and "
                f"multi_grid); got stackwise_dilations={stackwise_dilations!r}. Pass "
                "output_stride=8 or 16 instead."
            )
        super().__init__(**kwargs)


# ---------------------------------------------------------------------------------------------
# KerasCV instances (keras_cv is only looked at when the caller has imported it)
# ---------------------------------------------------------------------------------------------
def kerascv_resnet_class(backbone):
    """``DilatedResNetBackbone`` / ``DilatedResNetV2Backbone`` for a KerasCV ResNet V1 / V2
    instance (or one of ours), else ``None``."""
    if isinstance(backbone, _KerasCVLayout):
        return type(backbone)
    keras_cv = sys.modules.get("keras_cv")
    if keras_cv is None:  # not imported: the object cannot be a KerasCV model
        return None
    if isinstance(backbone, keras_cv.models.ResNetV2Backbone):
        return DilatedResNetV2Backbone
    if isinstance(backbone, keras_cv.models.ResNetBackbone):
        return DilatedResNetBackbone
    return None


def from_kerascv_resnet(backbone, output_stride=32, multi_grid=None, input_normalization=None,
                        input_shape=None, name=None):
    """Rebuild a KerasCV ``ResNetBackbone`` / ``ResNetV2Backbone`` (or one of the classes above)
    dilated at ``output_stride``, with a copy of its weights (the instance is unchanged).

    A KerasCV ``include_rescaling=True`` backbone is rebuilt without its ``Rescaling(1/255)``
    layer and declares ``input_normalization = UNIT_SCALING`` (``x / 255``) instead, so the
    model normalises once, the same way.
    """
    cls = kerascv_resnet_class(backbone)
    if cls is None:
        raise TypeError(f"{type(backbone).__name__} is not a KerasCV-layout ResNet backbone.")
    if input_normalization is None:
        input_normalization = getattr(backbone, "input_normalization", None)
    include_rescaling = bool(getattr(backbone, "include_rescaling", False))
    if include_rescaling and input_normalization in (None, pyramid.NO_NORMALIZATION):
        input_normalization = pyramid.UNIT_SCALING
    model = cls(
        stackwise_filters=backbone.stackwise_filters,
        stackwise_blocks=backbone.stackwise_blocks,
        stackwise_strides=backbone.stackwise_strides,
        block_type=backbone.block_type, include_rescaling=False,
        output_stride=output_stride, multi_grid=multi_grid,
        input_normalization=input_normalization,
        input_shape=tuple(input_shape or backbone.input_shape[1:]),
        name=name or f"{backbone.name}_os{output_stride}",
    )
    weights.copy_weights_by_name(backbone, model, f"backbone {backbone.name!r}")
    return model

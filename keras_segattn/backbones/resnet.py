"""Dilated ResNet backbones built on KerasCV's ``ResNetBackbone`` / ``ResNetV2Backbone``.

Attention segmentation models (DANet, CCNet, ...) run a ResNet at output stride 8: the strides
of the last stages are removed and their 3x3 convolutions dilated instead (Yu & Koltun,
"Multi-Scale Context Aggregation by Dilated Convolutions", ICLR 2016, arXiv:1511.07122; Chen
et al., DeepLab, TPAMI 2017, arXiv:1606.00915), so the pretrained weights keep computing the
same features at a higher resolution.

KerasCV 0.9.0's V1 ``ResNetBackbone`` silently swallows ``stackwise_dilations``; its V2 backbone
supports them but with a shifted rule (see below). This module therefore rebuilds both graphs
itself with **exactly KerasCV's layers, layer order and layer names** (so KerasCV ImageNet
weights and any ``.weights.h5`` saved from a plain KerasCV ResNet of the same depth load), only
changing ``strides`` and ``dilation_rate`` of the convolutions:

* ``DilatedResNetBackbone``: a registered subclass of ``keras_cv.models.ResNetBackbone`` (V1).
* ``DilatedResNetV2Backbone``: a registered subclass of ``keras_cv.models.ResNetV2Backbone``.

Both take ``output_stride`` (8, 16, 32) and ``multi_grid`` as constructor arguments and store
them in ``get_config()``, so ``keras.saving`` and ``.keras`` files rebuild the dilated graph.

Dilation rule (exact equivalence, TF-slim ``stack_blocks_dense`` / torchvision
``replace_stride_with_dilation``): walk the blocks in order; when a stride would take the
feature map past ``output_stride`` it is set to 1 and every later 3x3 conv gets its dilation
multiplied by that stride. The conv that carried the stride keeps the rate it had before. So:

* V1 bottleneck (stride in the first 1x1 conv, keras.applications layout): at OS8 all 3x3 convs
  of stage 3 have dilation 2 and of stage 4 dilation 4; at OS16 stage 4 has dilation 2.
* V1 basic block (stride in the first 3x3 conv): the first conv of a dilated stage keeps the
  previous rate (2 -> 1, 4 -> 2), like torchvision / mmseg ``contract_dilation``.
* V2 (KerasCV puts each stage's stride in the **last** block's 3x3 conv): stage 3 already runs at
  stride 8 until its last conv, so at OS8 only stage 4 is dilated (rate 2), and at OS16 only the
  final stride is removed (no dilation at all). KerasCV's own ``stackwise_dilations=[1,1,2,4]``
  over-dilates (rate 2 in stage 3, 4 in stage 4, block 1 never dilated); it is not used.
* ``multi_grid`` (DeepLabv3 / DANet ``--multi-grid``): block ``i`` of the last stage has its rate
  multiplied by ``multi_grid[i % len(multi_grid)]`` (cycled like DANet's ``multi_dilation``).

Deviation from mmseg's ResNetV1c (DANet/CCNet configs): KerasCV's V1 has the 7x7 stem and the
stride in the 1x1 conv (ResNet v1.0), not the deep 3x3 stem and v1.5 stride placement, because the
only available Keras ImageNet weights are KerasCV's. For mmsegmentation checkpoints use the
``*_v1c`` names instead:

* ``DilatedResNetV1cBackbone`` (``resnet18_v1c`` ... ``resnet152_v1c``, ``resnet_tiny_v1c``):
  mmsegmentation's ``ResNetV1c`` (open-mmlab/mmsegmentation ``mmseg/models/backbones/resnet.py``
  and ``mmseg/models/utils/res_layer.py``; He et al., "Bag of Tricks for Image Classification
  with Convolutional Neural Networks", CVPR 2019, arXiv:1812.01187) layer for layer: deep stem
  (3x3 conv stride 2 to ``stem_channels // 2``, BN, ReLU, 3x3 conv, BN, ReLU, 3x3 conv to
  ``stem_channels``, BN, ReLU, then 3x3 max-pool stride 2 padding 1), ``style="pytorch"``
  (the stride sits in the bottleneck's 3x3 conv), downsample shortcut = 1x1 conv with stride +
  BN (no ``avg_down``), BN eps 1e-5 (momentum 0.1 in PyTorch terms). Strided convs use explicit
  symmetric zero padding (``ZeroPadding2D`` + ``"valid"``) exactly like PyTorch's ``padding=1``
  (TensorFlow's ``"same"`` pads bottom/right only on even sizes); the max-pool pads with zeros,
  which equals PyTorch's -inf padding because its input is post-ReLU. Dilation follows the
  plan above with mmseg's ``contract_dilation=True`` (the rule of every ``*-d8``/``*-d16``
  config): the first block of a dilated stage uses half the stage's rate in its strided 3x3
  conv (OS8: stage 3 rates 1, 2, 2, ...; stage 4 rates 2, 4, 4). Like mmseg, the second 3x3
  conv of a *basic* block is never dilated. Layer names follow the mmseg state-dict keys
  (``stem_0``, ``layer3_1_conv2``, ``layer2_0_downsample_1`` ...), and
  ``reference_weight_mapping()`` maps mmseg keys (without the ``backbone.`` prefix) for
  ``keras_segattn.convert.load_reference_weights``. There are no Keras ImageNet weights for
  V1c. Deviation: ``multi_grid`` keeps this module's meaning (multipliers of the stage rate,
  cycled; the first block of the last stage then uses the full rate times ``multi_grid[0]``,
  like DANet's ``--multi-grid``), whereas mmseg uses ``multi_grid[i]`` as the absolute
  dilation of block ``i``. No mmseg ``*-d8`` config of the ported models uses multi-grid.

Features: ``backbone.pyramid_level_inputs`` = ``{"P2": ..., "P5": ...}`` are the layer names of the
four stage outputs (C2..C5; for resnet50: 256, 512, 1024, 2048 channels). The ``P`` keys keep
KerasCV's naming even after dilation: at OS8, P3, P4 and P5 all have stride 8. ``stage_outputs``
returns the symbolic tensors, ``stage_channels`` their widths. For V2, P5 is taken before the
final ``post_bn``/``post_relu`` (KerasCV convention); the model output is after them.
"""

import io
import json
import os
import warnings
import zipfile

import keras
from keras.src.utils.naming import to_snake_case  # the h5 group naming of save_weights
from keras_cv.models import Backbone, ResNetBackbone, ResNetV2Backbone

from keras_segattn import convert

BN_AXIS = 3
BN_EPSILON = 1.001e-5  # KerasCV / keras.applications value, needed for ImageNet weights

_STANDARD_FILTERS = [64, 128, 256, 512]
_STANDARD_STRIDES = [1, 2, 2, 2]
_DEPTHS = {
    "18": ("basic_block", [2, 2, 2, 2]),
    "34": ("basic_block", [3, 4, 6, 3]),
    "50": ("block", [3, 4, 6, 3]),
    "101": ("block", [3, 4, 23, 3]),
    "152": ("block", [3, 8, 36, 3]),
}


V1C = "1c"  # ``version`` of the mmsegmentation ResNetV1c specs


def _spec(version, block_type, blocks, filters=None, stem_channels=None):
    spec = {
        "version": version,
        "stackwise_filters": list(filters or _STANDARD_FILTERS),
        "stackwise_blocks": list(blocks),
        "stackwise_strides": list(_STANDARD_STRIDES),
        "block_type": block_type,
    }
    if version == V1C:
        spec["stem_channels"] = int(stem_channels or 64)
    return spec


BACKBONE_SPECS = {}
for _depth, (_block_type, _blocks) in _DEPTHS.items():
    BACKBONE_SPECS[f"resnet{_depth}"] = _spec(1, _block_type, _blocks)
    BACKBONE_SPECS[f"resnet{_depth}_v2"] = _spec(2, _block_type, _blocks)
for _depth, (_block_type, _blocks) in _DEPTHS.items():
    BACKBONE_SPECS[f"resnet{_depth}_v1c"] = _spec(V1C, _block_type, _blocks)
# Tiny configurations for tests and CPU demos. Bottleneck blocks: KerasCV's basic-block stage 1
# has an identity shortcut on the 64-channel stem, so it cannot be narrower than 64 channels.
# V2 needs 2 blocks per stage: KerasCV's V2 stack names its block 1 twice when blocks == 1.
BACKBONE_SPECS["resnet_tiny"] = _spec(1, "block", [1, 1, 1, 1], [8, 16, 32, 64])
BACKBONE_SPECS["resnet_tiny_v2"] = _spec(2, "block", [2, 2, 2, 2], [8, 16, 32, 64])
# V1c: 2 blocks in stages 3/4 so that contract_dilation (first block at half the rate) shows.
BACKBONE_SPECS["resnet_tiny_v1c"] = _spec(V1C, "block", [1, 1, 2, 2], [8, 16, 32, 64],
                                          stem_channels=16)

BACKBONE_NAMES = tuple(BACKBONE_SPECS)
OUTPUT_STRIDES = (8, 16, 32)

# KerasCV presets with ImageNet weights (downloaded from Kaggle by kagglehub).
IMAGENET_PRESETS = {
    "resnet50": "resnet50_imagenet",
    "resnet50_v2": "resnet50_v2_imagenet",
}


class WeightsNotAvailableError(RuntimeError):
    """Pretrained weights could not be obtained (no network, no kagglehub, no cache)."""


# ---------------------------------------------------------------------------------------------
# Dilation plan
# ---------------------------------------------------------------------------------------------
def _validate_output_stride(output_stride):
    if isinstance(output_stride, bool) or output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}. "
            "Use 8 for DANet/CCNet-style dilated backbones, 16 for a cheaper variant, "
            "32 for the plain (undilated) ResNet."
        )
    return int(output_stride)


def _validate_multi_grid(multi_grid):
    if multi_grid is None:
        return None
    try:
        grid = [int(g) for g in multi_grid]
        ok = len(grid) > 0 and all(g >= 1 and g == m for g, m in zip(grid, multi_grid))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"multi_grid must be None or a non-empty sequence of positive ints such as "
            f"(1, 2, 4), got {multi_grid!r}."
        )
    return grid


def dilation_plan(version, block_type, stackwise_blocks, stackwise_strides, output_stride,
                  multi_grid=None):
    """Per stage, per block: ``(stride, rate_before, rate_after)``.

    ``stride`` is the effective stride of the block's strided conv(s); ``rate_before`` is the
    dilation of the 3x3 conv carrying the stride (and of 3x3 convs before it), ``rate_after``
    the dilation of 3x3 convs after it. See the module docstring for the rule.
    """
    output_stride = _validate_output_stride(output_stride)
    multi_grid = _validate_multi_grid(multi_grid)
    current, rate = 4, 1  # the stem (7x7 conv + max-pool) has stride 4
    plan = []
    last_stage = len(stackwise_blocks) - 1
    for stage, (blocks, stride) in enumerate(zip(stackwise_blocks, stackwise_strides)):
        stage_plan = []
        for block in range(blocks):
            strided = block == (0 if version == 1 else blocks - 1)
            nominal = stride if strided else 1
            grid = multi_grid[block % len(multi_grid)] if multi_grid and stage == last_stage else 1
            before = rate
            if nominal > 1 and current * nominal > output_stride:
                effective, rate = 1, rate * nominal
            else:
                effective, current = nominal, current * nominal
            stage_plan.append((effective, before * grid, rate * grid))
        plan.append(stage_plan)
    return plan


# ---------------------------------------------------------------------------------------------
# Graph builders: layer-for-layer copies of keras_cv/src/models/backbones/resnet_v{1,2}/
# resnet_v{1,2}_backbone.py (KerasCV 0.9.0) with strides/dilations from the plan.
# ---------------------------------------------------------------------------------------------
def _bn(name):
    return keras.layers.BatchNormalization(axis=BN_AXIS, epsilon=BN_EPSILON, name=name)


def _v1_block(x, filters, stride, rate_before, rate_after, conv_shortcut, name):
    if conv_shortcut:
        shortcut = keras.layers.Conv2D(
            4 * filters, 1, strides=stride, use_bias=False, name=name + "_0_conv"
        )(x)
        shortcut = _bn(name + "_0_bn")(shortcut)
    else:
        shortcut = x
    x = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=name + "_1_conv")(x)
    x = _bn(name + "_1_bn")(x)
    x = keras.layers.Activation("relu", name=name + "_1_relu")(x)
    x = keras.layers.Conv2D(
        filters, 3, padding="SAME", dilation_rate=rate_after, use_bias=False,
        name=name + "_2_conv",
    )(x)
    x = _bn(name + "_2_bn")(x)
    x = keras.layers.Activation("relu", name=name + "_2_relu")(x)
    x = keras.layers.Conv2D(4 * filters, 1, use_bias=False, name=name + "_3_conv")(x)
    x = _bn(name + "_3_bn")(x)
    x = keras.layers.Add(name=name + "_add")([shortcut, x])
    return keras.layers.Activation("relu", name=name + "_out")(x)


def _v1_basic_block(x, filters, stride, rate_before, rate_after, conv_shortcut, name):
    if conv_shortcut:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, name=name + "_0_conv"
        )(x)
        shortcut = _bn(name + "_0_bn")(shortcut)
    else:
        shortcut = x
    x = keras.layers.Conv2D(
        filters, 3, padding="SAME", strides=stride, dilation_rate=rate_before, use_bias=False,
        name=name + "_1_conv",
    )(x)
    x = _bn(name + "_1_bn")(x)
    x = keras.layers.Activation("relu", name=name + "_1_relu")(x)
    x = keras.layers.Conv2D(
        filters, 3, padding="SAME", dilation_rate=rate_after, use_bias=False,
        name=name + "_2_conv",
    )(x)
    x = _bn(name + "_2_bn")(x)
    x = keras.layers.Add(name=name + "_add")([shortcut, x])
    return keras.layers.Activation("relu", name=name + "_out")(x)


def _v2_shortcut(x, preact, channels, stride, conv_shortcut, name):
    if conv_shortcut:
        return keras.layers.Conv2D(channels, 1, strides=stride, name=name + "_0_conv")(preact)
    if stride > 1:
        return keras.layers.MaxPooling2D(1, strides=stride, name=name + "_0_max_pooling")(x)
    return x


def _v2_block(x, filters, stride, rate_before, rate_after, conv_shortcut, name):
    preact = _bn(name + "_use_preactivation_bn")(x)
    preact = keras.layers.Activation("relu", name=name + "_use_preactivation_relu")(preact)
    shortcut = _v2_shortcut(x, preact, 4 * filters, stride, conv_shortcut, name)
    x = keras.layers.Conv2D(filters, 1, strides=1, use_bias=False, name=name + "_1_conv")(preact)
    x = _bn(name + "_1_bn")(x)
    x = keras.layers.Activation("relu", name=name + "_1_relu")(x)
    x = keras.layers.Conv2D(
        filters, 3, strides=stride, use_bias=False, padding="same", dilation_rate=rate_before,
        name=name + "_2_conv",
    )(x)
    x = _bn(name + "_2_bn")(x)
    x = keras.layers.Activation("relu", name=name + "_2_relu")(x)
    x = keras.layers.Conv2D(4 * filters, 1, name=name + "_3_conv")(x)
    return keras.layers.Add(name=name + "_out")([shortcut, x])


def _v2_basic_block(x, filters, stride, rate_before, rate_after, conv_shortcut, name):
    preact = _bn(name + "_use_preactivation_bn")(x)
    preact = keras.layers.Activation("relu", name=name + "_use_preactivation_relu")(preact)
    shortcut = _v2_shortcut(x, preact, filters, stride, conv_shortcut, name)
    x = keras.layers.Conv2D(
        filters, 3, padding="SAME", strides=1, dilation_rate=rate_before, use_bias=False,
        name=name + "_1_conv",
    )(preact)
    x = _bn(name + "_1_bn")(x)
    x = keras.layers.Activation("relu", name=name + "_1_relu")(x)
    x = keras.layers.Conv2D(
        filters, 3, strides=stride, padding="same", dilation_rate=rate_before, use_bias=False,
        name=name + "_2_conv",
    )(x)
    return keras.layers.Add(name=name + "_out")([shortcut, x])


_BLOCKS = {
    (1, "block"): _v1_block,
    (1, "basic_block"): _v1_basic_block,
    (2, "block"): _v2_block,
    (2, "basic_block"): _v2_basic_block,
}


def _build_graph(version, inputs, stackwise_filters, stackwise_blocks, stackwise_strides,
                 include_rescaling, block_type, output_stride, multi_grid):
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
        x = keras.layers.Rescaling(1 / 255.0)(x)
    x = keras.layers.Conv2D(
        64, 7, strides=2, use_bias=(version == 2), padding="same", name="conv1_conv"
    )(x)
    if version == 1:
        x = _bn("conv1_bn")(x)
        x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)

    pyramid_level_inputs = {}
    for stage, stage_plan in enumerate(plan):
        first_shortcut = block_type == "block" or stage > 0
        for block, (stride, rate_before, rate_after) in enumerate(stage_plan):
            # KerasCV V2 names its last block "block{n}" and V1 its blocks "block1".."block{n}".
            x = block_fn(
                x, stackwise_filters[stage], stride, rate_before, rate_after,
                conv_shortcut=first_shortcut and block == 0,
                name=f"v2_stack_{stage}_block{block + 1}",
            )
        pyramid_level_inputs[f"P{stage + 2}"] = x._keras_history.operation.name
    if version == 2:
        x = _bn("post_bn")(x)
        x = keras.layers.Activation("relu", name="post_relu")(x)
    # The largest 3x3 dilation of each stage (V1: convs after the stride point; V2: the 3x3
    # convs sit before or at it).
    stackwise_dilations = [
        max(step[2] if version == 1 else step[1] for step in stage_plan) for stage_plan in plan
    ]
    return x, pyramid_level_inputs, stackwise_dilations


def _parse_inputs(input_shape, input_tensor):
    if input_tensor is None:
        return keras.layers.Input(shape=tuple(input_shape))
    if not keras.backend.is_keras_tensor(input_tensor):
        return keras.layers.Input(tensor=input_tensor, shape=tuple(input_shape))
    return input_tensor


class _DilatedMixin:
    """Shared attributes/config of the two dilated ResNet classes."""

    def _finish_init(self, pyramid_level_inputs, stackwise_filters, stackwise_blocks,
                     stackwise_strides, include_rescaling, input_tensor, block_type,
                     output_stride, multi_grid, stackwise_dilations):
        self.pyramid_level_inputs = pyramid_level_inputs
        self.stackwise_filters = list(stackwise_filters)
        self.stackwise_blocks = list(stackwise_blocks)
        self.stackwise_strides = list(stackwise_strides)
        self.include_rescaling = include_rescaling
        self.input_tensor = input_tensor
        self.block_type = block_type
        self.output_stride = output_stride
        self.multi_grid = None if multi_grid is None else list(multi_grid)
        # Informational: the largest 3x3 dilation in each stage (multi-grid included).
        self.stackwise_dilations = stackwise_dilations

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "stackwise_filters": self.stackwise_filters,
            "stackwise_blocks": self.stackwise_blocks,
            "stackwise_strides": self.stackwise_strides,
            "include_rescaling": self.include_rescaling,
            "input_shape": self.input_shape[1:],
            "input_tensor": self.input_tensor,
            "block_type": self.block_type,
            "output_stride": self.output_stride,
            "multi_grid": self.multi_grid,
        }
        return config


@keras.saving.register_keras_serializable(package="keras_segattn")
class DilatedResNetBackbone(_DilatedMixin, ResNetBackbone):
    """KerasCV ResNet V1 backbone with working dilation (output stride 8/16/32).

    Identical layers, layer order, names and weight shapes to
    ``keras_cv.models.ResNetBackbone`` with the same ``stackwise_*``/``block_type`` arguments;
    only conv strides and dilation rates differ (see the module docstring). KerasCV weights and
    ``.weights.h5`` files of a plain ResNet of the same depth load unchanged.

    Args:
        stackwise_filters, stackwise_blocks, stackwise_strides, include_rescaling, input_shape,
            input_tensor, block_type: as in ``keras_cv.models.ResNetBackbone``.
        output_stride: 8, 16 or 32 (32 = the plain network).
        multi_grid: optional sequence, e.g. ``(1, 2, 4)``: per-block dilation multipliers of the
            last stage (cycled over its blocks).

    Example:
    ```python
    backbone = DilatedResNetBackbone(
        stackwise_filters=[8, 16, 32, 64], stackwise_blocks=[1, 1, 1, 1],
        stackwise_strides=[1, 2, 2, 2], include_rescaling=False, output_stride=8,
    )
    backbone(np.zeros((1, 64, 64, 3))).shape  # (1, 8, 8, 256)
    ```
    """

    def __init__(self, *, stackwise_filters, stackwise_blocks, stackwise_strides,
                 include_rescaling, output_stride=32, multi_grid=None,
                 input_shape=(None, None, 3), input_tensor=None, block_type="block", **kwargs):
        inputs = _parse_inputs(input_shape, input_tensor)
        x, pyramid, dilations = _build_graph(
            1, inputs, stackwise_filters, stackwise_blocks, stackwise_strides,
            include_rescaling, block_type, output_stride, multi_grid,
        )
        # Skip ResNetBackbone.__init__ (it would build the undilated graph).
        Backbone.__init__(self, inputs=inputs, outputs=x, **kwargs)
        self._finish_init(
            pyramid, stackwise_filters, stackwise_blocks, stackwise_strides, include_rescaling,
            input_tensor, block_type, int(output_stride), _validate_multi_grid(multi_grid),
            dilations,
        )


@keras.saving.register_keras_serializable(package="keras_segattn")
class DilatedResNetV2Backbone(_DilatedMixin, ResNetV2Backbone):
    """KerasCV ResNet V2 backbone with exact-equivalence dilation (output stride 8/16/32).

    Same layers, names and weight shapes as ``keras_cv.models.ResNetV2Backbone``; the dilation
    rule differs from KerasCV's ``stackwise_dilations`` (see the module docstring), which is
    therefore not accepted here.

    Args:
        stackwise_filters, stackwise_blocks, stackwise_strides, include_rescaling, input_shape,
            input_tensor, block_type: as in ``keras_cv.models.ResNetV2Backbone``.
        output_stride: 8, 16 or 32 (32 = the plain network).
        multi_grid: optional per-block dilation multipliers of the last stage.

    Example:
    ```python
    backbone = DilatedResNetV2Backbone(
        stackwise_filters=[8, 16, 32, 64], stackwise_blocks=[2, 2, 2, 2],
        stackwise_strides=[1, 2, 2, 2], include_rescaling=False, output_stride=16,
    )
    backbone(np.zeros((1, 64, 64, 3))).shape  # (1, 4, 4, 256)
    ```
    """

    def __init__(self, *, stackwise_filters, stackwise_blocks, stackwise_strides,
                 include_rescaling, output_stride=32, multi_grid=None, stackwise_dilations=None,
                 input_shape=(None, None, 3), input_tensor=None, block_type="block", **kwargs):
        if stackwise_dilations is not None:
            raise ValueError(
                "DilatedResNetV2Backbone derives its dilations from output_stride (and "
                f"multi_grid); got stackwise_dilations={stackwise_dilations!r}. Pass "
                "output_stride=8 or 16 instead."
            )
        inputs = _parse_inputs(input_shape, input_tensor)
        x, pyramid, dilations = _build_graph(
            2, inputs, stackwise_filters, stackwise_blocks, stackwise_strides,
            include_rescaling, block_type, output_stride, multi_grid,
        )
        Backbone.__init__(self, inputs=inputs, outputs=x, **kwargs)
        self._finish_init(
            pyramid, stackwise_filters, stackwise_blocks, stackwise_strides, include_rescaling,
            input_tensor, block_type, int(output_stride), _validate_multi_grid(multi_grid),
            dilations,
        )


# ---------------------------------------------------------------------------------------------
# mmsegmentation ResNetV1c (deep stem, stride on the 3x3 conv, contract_dilation)
# ---------------------------------------------------------------------------------------------
V1C_BN_EPSILON = 1e-5  # PyTorch BatchNorm2d
V1C_BN_MOMENTUM = 0.9  # Keras meaning; PyTorch momentum 0.1


def _v1c_bn(name):
    return keras.layers.BatchNormalization(
        axis=BN_AXIS, epsilon=V1C_BN_EPSILON, momentum=V1C_BN_MOMENTUM, name=name
    )


def _v1c_conv(x, filters, kernel_size, stride, rate, name):
    """Bias-free conv with PyTorch padding ``rate * (k - 1) // 2`` on both sides."""
    if stride > 1 and rate > 1:
        raise ValueError(
            f"ResNetV1c layer {name!r}: a strided conv cannot also be dilated (stride {stride}, "
            f"dilation {rate}); this happens with output_stride=32 and multi_grid[0] > 1. Use "
            "output_stride 8 or 16 with multi_grid, or multi_grid starting with 1."
        )
    padding = "same"
    if stride > 1:
        padding = "valid"
        pad = rate * (kernel_size - 1) // 2
        if pad:
            # Symmetric like torch's Conv2d(padding=pad); "same" would pad bottom/right only.
            x = keras.layers.ZeroPadding2D(pad, name=name + "_pad")(x)
    return keras.layers.Conv2D(
        filters, kernel_size, strides=stride, padding=padding, dilation_rate=rate,
        use_bias=False, name=name,
    )(x)


def _v1c_bottleneck(x, filters, stride, rate, conv_shortcut, name):
    """mmseg ``Bottleneck`` (style="pytorch"): 1x1 -> 3x3 (stride, dilation) -> 1x1 (x4)."""
    shortcut = x
    if conv_shortcut:
        shortcut = _v1c_conv(x, 4 * filters, 1, stride, 1, name + "_downsample_0")
        shortcut = _v1c_bn(name + "_downsample_1")(shortcut)
    x = _v1c_conv(x, filters, 1, 1, 1, name + "_conv1")
    x = _v1c_bn(name + "_bn1")(x)
    x = keras.layers.Activation("relu", name=name + "_relu1")(x)
    x = _v1c_conv(x, filters, 3, stride, rate, name + "_conv2")
    x = _v1c_bn(name + "_bn2")(x)
    x = keras.layers.Activation("relu", name=name + "_relu2")(x)
    x = _v1c_conv(x, 4 * filters, 1, 1, 1, name + "_conv3")
    x = _v1c_bn(name + "_bn3")(x)
    x = keras.layers.Add(name=name + "_add")([x, shortcut])
    return keras.layers.Activation("relu", name=name + "_out")(x)


def _v1c_basic_block(x, filters, stride, rate, conv_shortcut, name):
    """mmseg ``BasicBlock``: 3x3 (stride, dilation) -> 3x3 (never dilated, as in mmseg)."""
    shortcut = x
    if conv_shortcut:
        shortcut = _v1c_conv(x, filters, 1, stride, 1, name + "_downsample_0")
        shortcut = _v1c_bn(name + "_downsample_1")(shortcut)
    x = _v1c_conv(x, filters, 3, stride, rate, name + "_conv1")
    x = _v1c_bn(name + "_bn1")(x)
    x = keras.layers.Activation("relu", name=name + "_relu1")(x)
    x = _v1c_conv(x, filters, 3, 1, 1, name + "_conv2")
    x = _v1c_bn(name + "_bn2")(x)
    x = keras.layers.Add(name=name + "_add")([x, shortcut])
    return keras.layers.Activation("relu", name=name + "_out")(x)


def v1c_block_rates(block_type, stackwise_blocks, stackwise_strides, output_stride,
                    multi_grid=None, contract_dilation=True):
    """Per stage, per block: ``(stride, dilation)`` of the block's strided 3x3 conv
    (bottleneck ``conv2``, basic block ``conv1``) in ``DilatedResNetV1cBackbone``.

    Every other 3x3 conv of a bottleneck has the same dilation; a basic block's ``conv2`` is
    never dilated (mmseg). With ``contract_dilation`` the block whose stride was removed keeps
    the rate from before (half the stage rate), except in the last stage when ``multi_grid``
    is given (then ``rate * multi_grid[0]``, like mmseg/DANet, which do not contract there).
    """
    plan = dilation_plan(1, block_type, stackwise_blocks, stackwise_strides, output_stride,
                         multi_grid)
    last = len(plan) - 1
    rates = []
    for stage, stage_plan in enumerate(plan):
        contract = contract_dilation and not (multi_grid and stage == last)
        rates.append([
            (stride, before if contract else after) for stride, before, after in stage_plan
        ])
    return rates


def _build_v1c_graph(inputs, stackwise_filters, stackwise_blocks, stackwise_strides,
                     include_rescaling, block_type, output_stride, multi_grid, stem_channels,
                     contract_dilation):
    if block_type not in ("block", "basic_block"):
        raise ValueError(
            f'block_type must be "block" or "basic_block", got {block_type!r}.'
        )
    stem_channels = int(stem_channels)
    if stem_channels < 2 or stem_channels % 2:
        raise ValueError(
            f"stem_channels must be an even int >= 2 (the deep stem's first two convs have "
            f"stem_channels // 2 channels), got {stem_channels!r}."
        )
    rates = v1c_block_rates(block_type, stackwise_blocks, stackwise_strides, output_stride,
                            multi_grid, contract_dilation)
    block_fn = _v1c_bottleneck if block_type == "block" else _v1c_basic_block
    expansion = 4 if block_type == "block" else 1
    x = inputs
    if include_rescaling:
        x = keras.layers.Rescaling(1 / 255.0)(x)
    # Deep stem: mmseg ``stem`` = Sequential(conv, bn, relu, conv, bn, relu, conv, bn, relu).
    for index, (filters, stride) in enumerate(
        [(stem_channels // 2, 2), (stem_channels // 2, 1), (stem_channels, 1)]
    ):
        x = _v1c_conv(x, filters, 3, stride, 1, f"stem_{3 * index}")
        x = _v1c_bn(f"stem_{3 * index + 1}")(x)
        x = keras.layers.Activation("relu", name=f"stem_{3 * index + 2}")(x)
    # MaxPool2d(3, stride 2, padding 1): zero padding == -inf padding after the ReLU.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")(x)

    pyramid_level_inputs = {}
    channels = stem_channels
    for stage, stage_rates in enumerate(rates):
        out_channels = expansion * stackwise_filters[stage]
        for block, (stride, rate) in enumerate(stage_rates):
            x = block_fn(
                x, stackwise_filters[stage], stride, rate,
                conv_shortcut=stride != 1 or channels != out_channels,
                name=f"layer{stage + 1}_{block}",
            )
            channels = out_channels
        pyramid_level_inputs[f"P{stage + 2}"] = x._keras_history.operation.name
    stackwise_dilations = [max(rate for _, rate in stage_rates) for stage_rates in rates]
    return x, pyramid_level_inputs, stackwise_dilations


@keras.saving.register_keras_serializable(package="keras_segattn")
class DilatedResNetV1cBackbone(_DilatedMixin, Backbone):
    """mmsegmentation ``ResNetV1c`` (deep stem, ``style="pytorch"``) with dilation.

    See the module docstring: same layers, padding and BN epsilon as mmseg's ``ResNetV1c``, so
    an mmseg checkpoint's ``backbone.*`` weights port exactly with
    ``keras_segattn.convert.load_reference_weights(backbone, state_dict,
    strip_prefix="backbone.")``. Layer names are the mmseg module paths with ``_`` for ``.``
    (``stem_0`` ... ``stem_8``, ``layer{i}_{j}_conv{1,2,3}``, ``layer{i}_{j}_bn{1,2,3}``,
    ``layer{i}_{j}_downsample_{0,1}``; block outputs ``layer{i}_{j}_out``).

    Args:
        stackwise_filters, stackwise_blocks, stackwise_strides, include_rescaling, input_shape,
            input_tensor, block_type: as in ``DilatedResNetBackbone`` (mmseg's
            ``base_channels * 2**i``, ``arch_settings``, ``strides``).
        output_stride: 8, 16 or 32. mmseg's ``*-d8`` configs (``strides=(1, 2, 1, 1)``,
            ``dilations=(1, 1, 2, 4)``) are ``output_stride=8``; ``*-d16`` are 16.
        multi_grid: optional per-block multipliers of the last stage's rate (cycled).
        stem_channels: int, width of the deep stem's output (its first convs have half).
            Default 64 (mmseg).
        contract_dilation: bool. Default True (mmseg's dilated configs): the first block of a
            dilated stage uses half the stage's dilation. False: the full rate.

    Example:
    ```python
    backbone = DilatedResNetV1cBackbone(
        stackwise_filters=[8, 16, 32, 64], stackwise_blocks=[1, 1, 2, 2],
        stackwise_strides=[1, 2, 2, 2], stem_channels=16, output_stride=8,
    )
    backbone(np.zeros((1, 33, 47, 3))).shape  # (1, 5, 6, 256)
    ```
    """

    def __init__(self, *, stackwise_filters, stackwise_blocks, stackwise_strides,
                 include_rescaling=False, output_stride=32, multi_grid=None, stem_channels=64,
                 contract_dilation=True, input_shape=(None, None, 3), input_tensor=None,
                 block_type="block", **kwargs):
        inputs = _parse_inputs(input_shape, input_tensor)
        x, pyramid, dilations = _build_v1c_graph(
            inputs, stackwise_filters, stackwise_blocks, stackwise_strides, include_rescaling,
            block_type, output_stride, multi_grid, stem_channels, bool(contract_dilation),
        )
        Backbone.__init__(self, inputs=inputs, outputs=x, **kwargs)
        self._finish_init(
            pyramid, stackwise_filters, stackwise_blocks, stackwise_strides, include_rescaling,
            input_tensor, block_type, int(output_stride), _validate_multi_grid(multi_grid),
            dilations,
        )
        self.stem_channels = int(stem_channels)
        self.contract_dilation = bool(contract_dilation)

    def get_config(self):
        config = super().get_config()
        config.update({"stem_channels": self.stem_channels,
                       "contract_dilation": self.contract_dilation})
        return config

    def reference_weight_mapping(self):
        """mmseg ``ResNetV1c`` state-dict keys (``stem.0.weight``, ``stem.1.running_mean``,
        ``layer1.0.conv1.weight``, ``layer1.0.downsample.1.bias`` ...; no ``backbone.``
        prefix) -> our variables. The layer names are the keys with ``_`` for ``.``."""
        mapping = {}
        for layer in self.layers:
            key = layer.name.replace("_", ".")
            if isinstance(layer, keras.layers.Conv2D):
                mapping.update(convert.conv_mapping(key, layer))
            elif isinstance(layer, keras.layers.BatchNormalization):
                mapping.update(convert.batch_norm_mapping(key, layer))
        return mapping


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------
def _preset_file(handle, filename):
    """Local path of ``filename`` in a KerasCV preset (kagglehub download); separate for mocking."""
    from keras_cv.src.utils.preset_utils import get_file

    return get_file(handle, filename)


def _check_preset_config(config, spec, where):
    inner = config.get("config", {})
    registered = str(config.get("registered_name", config.get("class_name", "")))
    is_v2 = "V2" in registered
    if is_v2 != (spec["version"] == 2):
        raise ValueError(
            f"{where} holds a {registered!r} backbone, which does not match ResNet "
            f"{'V2' if spec['version'] == 2 else 'V1'}."
        )
    for key in ("stackwise_filters", "stackwise_blocks", "block_type"):
        if key in inner and inner[key] != spec[key]:
            raise ValueError(
                f"{where} was saved from a backbone with {key}={inner[key]!r}, but this backbone "
                f"has {key}={spec[key]!r}: weights only load into the same depth."
            )
    return config.get("weights") or "model.weights.h5"


def _load_imagenet(model, name, spec):
    if name not in IMAGENET_PRESETS:
        raise ValueError(
            f"weights='imagenet' is only available for {sorted(IMAGENET_PRESETS)} (KerasCV "
            f"presets); got backbone={name!r}. Use weights=None or a path to a .weights.h5 file."
        )
    preset = IMAGENET_PRESETS[name]
    cls = ResNetV2Backbone if spec["version"] == 2 else ResNetBackbone
    handle = cls.presets[preset]["kaggle_handle"]
    try:
        with open(_preset_file(handle, "config.json")) as f:
            config = json.load(f)
        weights_file = _check_preset_config(config, spec, f"KerasCV preset {preset!r}")
        weights_path = _preset_file(handle, weights_file)
    except ValueError:
        raise
    except Exception as error:  # network, kagglehub missing, auth, ...
        raise WeightsNotAvailableError(
            f"Could not download the ImageNet weights of {name!r} (KerasCV preset {preset!r}, "
            f"{handle}): {type(error).__name__}: {error}\n"
            "No network access? On a machine with access run\n"
            f"    keras_cv.models.{cls.__name__}.from_preset({preset!r}).save_weights("
            f"'{name}.weights.h5')\n"
            f"copy the file here and pass weights='/path/{name}.weights.h5' to get_backbone "
            "(backbone_weights=path in the models), or weights=None for random init."
        ) from error
    _load_weights_file(model, weights_path, name)


def _expected_weight_groups(model):
    """``{h5 group: [variable shapes]}`` as Keras 3 ``save_weights`` names a functional model's
    layers: snake-cased class name + a per-class counter, in ``model.layers`` order."""
    groups, used = {}, {}
    for layer in model.layers:
        base = to_snake_case(type(layer).__name__)
        count = used.get(base, 0)
        used[base] = count + 1
        if layer.weights:
            key = base if count == 0 else f"{base}_{count}"
            groups[key] = sorted(tuple(w.shape) for w in layer.weights)
    return groups


def _check_weights_file(model, path):
    """Keras only *warns* when a weights file does not fit the model (and keeps random weights
    for what it could not match), so compare the file's layer groups and shapes first."""
    import h5py

    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            handle = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    else:
        handle = h5py.File(path, "r")
    with handle as f:
        if "layers" not in f:
            return  # not Keras 3 functional layout: let load_weights decide
        saved = {}
        for key, group in f["layers"].items():
            variables = group.get("vars")
            if variables is not None and len(variables):
                saved[key] = sorted(tuple(variables[k].shape) for k in variables)
    expected = _expected_weight_groups(model)
    if saved != expected:
        missing = sorted(set(expected) - set(saved))
        extra = sorted(set(saved) - set(expected))
        shapes = sorted(k for k in set(saved) & set(expected) if saved[k] != expected[k])
        raise ValueError(
            f"layers missing in the file: {missing[:5]}, extra layers in the file: {extra[:5]}, "
            f"shape mismatches: {[(k, saved[k], expected[k]) for k in shapes[:3]]}"
        )


def _load_weights_file(model, path, name):
    try:
        _check_weights_file(model, path)
        with warnings.catch_warnings():
            # KerasCV's Backbone.__dir__ hack makes Keras visit internal containers; harmless.
            warnings.filterwarnings("ignore", message="Skipping nested container")
            model.load_weights(path)
    except Exception as error:
        raise ValueError(
            f"Could not load backbone weights from {path!r} into {name!r}: "
            f"{type(error).__name__}: {error}\nThe file must be saved (save_weights / "
            "save_to_preset) from a KerasCV ResNet or a keras_segattn backbone of the same depth "
            "and version; dilation/output stride do not matter."
        ) from error


def _load_local(model, path, name, spec):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Backbone weights file {path!r} does not exist. Pass a .weights.h5 file (or a "
            "KerasCV preset directory) saved from a backbone of the same depth, "
            "weights='imagenet', or weights=None."
        )
    if os.path.isdir(path):
        config_path = os.path.join(path, "config.json")
        weights_file = "model.weights.h5"
        if os.path.exists(config_path):
            try:
                with open(config_path) as f:
                    config = json.load(f)
            except (OSError, ValueError) as error:
                raise ValueError(f"Unreadable preset config {config_path!r}: {error}") from error
            weights_file = _check_preset_config(config, spec, f"Preset directory {path!r}")
        weights_path = os.path.join(path, weights_file)
        if not os.path.exists(weights_path):
            raise FileNotFoundError(
                f"Preset directory {path!r} has no weights file {weights_file!r}."
            )
        return _load_weights_file(model, weights_path, name)
    if not (path.endswith(".weights.h5") or path.endswith(".keras")):
        raise ValueError(
            f"Backbone weights {path!r}: expected a '.weights.h5' file (Keras 3 save_weights), "
            "a '.keras' file, or a KerasCV preset directory."
        )
    return _load_weights_file(model, path, name)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def _check_backbone_instance(backbone):
    levels = getattr(backbone, "pyramid_level_inputs", None)
    missing = [k for k in ("P2", "P3", "P4", "P5") if not levels or k not in levels]
    if missing:
        raise ValueError(
            f"backbone {getattr(backbone, 'name', backbone)!r} ({type(backbone).__name__}) must "
            "expose `pyramid_level_inputs` with keys P2..P5 (layer names of the four stage "
            f"outputs); missing {missing}. Use get_backbone('resnet50') or a KerasCV ResNet."
        )
    names = {layer.name for layer in backbone.layers}
    unknown = {k: levels[k] for k in ("P2", "P3", "P4", "P5") if levels[k] not in names}
    if unknown:
        raise ValueError(
            f"backbone {backbone.name!r}: pyramid_level_inputs {unknown} name no layer of the model."
        )
    return backbone


def get_backbone(backbone="resnet50", output_stride=8, multi_grid=None, weights=None,
                 input_shape=(None, None, 3)):
    """A dilated KerasCV ResNet backbone for segmentation.

    Args:
        backbone: a name from ``BACKBONE_NAMES`` ("resnet18" ... "resnet152", the same with
            "_v2" or "_v1c" (mmsegmentation's ResNetV1c, for porting mmseg checkpoints),
            "resnet_tiny", "resnet_tiny_v2", "resnet_tiny_v1c"), a KerasCV ``Backbone``
            instance (returned as is after checking ``pyramid_level_inputs``; the other
            arguments must then be left at their defaults except ``output_stride``/
            ``input_shape``, which are ignored), or a dict from ``backbone_config``
            (deserialized).
        output_stride: 8, 16 or 32. OS8: V1 stages 3/4 dilated 2/4 without stride; OS16: stage 4
            dilated 2 (V2: see module docstring).
        multi_grid: optional per-block multipliers of the last stage's dilation, e.g. (1, 2, 4).
        weights: None (random init), "imagenet" (KerasCV presets; resnet50 and resnet50_v2 only;
            needs the network or a kagglehub cache), or a path to a ``.weights.h5`` /
            ``.keras`` file or KerasCV preset directory saved from a backbone of the same depth.
            ``*_v1c`` backbones have no Keras ImageNet weights: port an mmseg checkpoint with
            ``keras_segattn.convert.load_reference_weights``.
        input_shape: input shape without batch, default ``(None, None, 3)``.

    Returns:
        ``DilatedResNetBackbone`` (a ``keras_cv.models.ResNetBackbone``),
        ``DilatedResNetV2Backbone`` (a ``ResNetV2Backbone``) or ``DilatedResNetV1cBackbone``
        (a KerasCV ``Backbone``), built with
        ``include_rescaling=False``: feed ImageNet mean/std-normalized images.

    Example:
    ```python
    backbone = get_backbone("resnet_tiny", output_stride=8)
    features = stage_outputs(backbone)  # {"stage1": ..., "stage4": ...}, strides 4, 8, 8, 8
    extractor = keras.Model(backbone.input, features)
    ```
    """
    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)
    if isinstance(backbone, keras.Model):
        if weights is not None or multi_grid is not None:
            raise ValueError(
                "get_backbone() returns a backbone instance unchanged; build it with the "
                "dilation you want and load its weights yourself (got "
                f"weights={weights!r}, multi_grid={multi_grid!r})."
            )
        return _check_backbone_instance(backbone)
    if not isinstance(backbone, str):
        raise TypeError(
            f"backbone must be a name (one of {list(BACKBONE_NAMES)}) or a KerasCV Backbone "
            f"instance, got {type(backbone).__name__}."
        )
    key = backbone.lower()
    if key not in BACKBONE_SPECS:
        raise ValueError(
            f"Unknown backbone {backbone!r}. Valid names: {', '.join(BACKBONE_NAMES)}; or pass "
            "a KerasCV Backbone instance."
        )
    output_stride = _validate_output_stride(output_stride)
    multi_grid = _validate_multi_grid(multi_grid)
    spec = BACKBONE_SPECS[key]
    if spec["version"] == V1C and isinstance(weights, str) and weights.lower() == "imagenet":
        raise ValueError(
            f"weights='imagenet' is not available for {key!r}: there are no Keras ImageNet "
            "weights for mmsegmentation's ResNetV1c. Build it with weights=None and port an "
            "mmsegmentation checkpoint with keras_segattn.convert.load_reference_weights: "
            "a whole model's (model.reference_weight_mapping() maps its 'backbone.*', "
            "'decode_head.*' and 'auxiliary_head.*' keys), or a backbone's, e.g. "
            "load_reference_weights(backbone, 'resnet50_v1c.pth', strip_prefix='backbone.')."
        )
    extra = {}
    if spec["version"] == V1C:
        cls, extra = DilatedResNetV1cBackbone, {"stem_channels": spec["stem_channels"]}
    else:
        cls = DilatedResNetV2Backbone if spec["version"] == 2 else DilatedResNetBackbone
    model = cls(
        stackwise_filters=spec["stackwise_filters"],
        stackwise_blocks=spec["stackwise_blocks"],
        stackwise_strides=spec["stackwise_strides"],
        block_type=spec["block_type"],
        include_rescaling=False,
        output_stride=output_stride,
        multi_grid=multi_grid,
        input_shape=tuple(input_shape),
        name=f"{key}_os{output_stride}",
        **extra,
    )
    if weights is None:
        return model
    if isinstance(weights, str) and weights.lower() == "imagenet":
        _load_imagenet(model, key, spec)
    elif isinstance(weights, (str, os.PathLike)):
        _load_local(model, weights, key, spec)
    else:
        raise TypeError(
            f"weights must be None, 'imagenet' or a file path, got {type(weights).__name__}."
        )
    return model


def backbone_config(backbone):
    """JSON-serializable config of a backbone (``keras.saving.serialize_keras_object``).

    Pass it back to ``get_backbone`` (or ``keras.saving.deserialize_keras_object``) to rebuild
    the same architecture (weights not included). A name string is returned unchanged.
    """
    if isinstance(backbone, str):
        return backbone
    return keras.saving.serialize_keras_object(_check_backbone_instance(backbone))


def stage_outputs(backbone):
    """``{"stage1": C2, "stage2": C3, "stage3": C4, "stage4": C5}`` symbolic stage outputs.

    The tensors belong to ``backbone``'s graph, so
    ``keras.Model(backbone.input, stage_outputs(backbone))`` is a feature extractor sharing
    the backbone's weights.
    """
    levels = _check_backbone_instance(backbone).pyramid_level_inputs
    return {
        f"stage{i}": backbone.get_layer(levels[f"P{i + 1}"]).output for i in range(1, 5)
    }


def stage_channels(backbone):
    """``{"stage1": channels, ..., "stage4": channels}`` of the four stage outputs."""
    return {k: int(v.shape[-1]) for k, v in stage_outputs(backbone).items()}

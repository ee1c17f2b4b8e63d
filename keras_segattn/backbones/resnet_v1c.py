"""mmsegmentation's ResNetV1c with dilation, for porting mmseg checkpoints.

``DilatedResNetV1cBackbone`` (``resnet18_v1c`` ... ``resnet152_v1c``, ``resnet_tiny_v1c``) is
mmsegmentation's ``ResNetV1c`` (open-mmlab/mmsegmentation ``mmseg/models/backbones/resnet.py``
and ``mmseg/models/utils/res_layer.py``; He et al., "Bag of Tricks for Image Classification
with Convolutional Neural Networks", CVPR 2019, arXiv:1812.01187) layer for layer: deep stem
(3x3 conv stride 2 to ``stem_channels // 2``, BN, ReLU, 3x3 conv, BN, ReLU, 3x3 conv to
``stem_channels``, BN, ReLU, then 3x3 max-pool stride 2 padding 1), ``style="pytorch"`` (the
stride sits in the bottleneck's 3x3 conv), downsample shortcut = 1x1 conv with stride + BN (no
``avg_down``), BN eps 1e-5 (momentum 0.1 in PyTorch terms). Strided convs use explicit
symmetric zero padding (``ZeroPadding2D`` + ``"valid"``) exactly like PyTorch's ``padding=1``
(TensorFlow's ``"same"`` pads bottom/right only on even sizes); the max-pool pads with zeros,
which equals PyTorch's -inf padding because its input is post-ReLU.

Dilation follows ``dilation.block_rates`` with mmseg's ``contract_dilation=True`` (the rule of
every ``*-d8``/``*-d16`` config): the first block of a dilated stage uses half the stage's rate
in its strided 3x3 conv (OS8: stage 3 rates 1, 2, 2, ...; stage 4 rates 2, 4, 4). Like mmseg,
the second 3x3 conv of a *basic* block is never dilated. Deviation: ``multi_grid`` keeps this
package's meaning (multipliers of the stage rate, cycled; the first block of the last stage
then uses the full rate times ``multi_grid[0]``, like DANet's ``--multi-grid``), whereas mmseg
uses ``multi_grid[i]`` as the absolute dilation of block ``i``. No mmseg ``*-d8`` config of the
ported models uses multi-grid.

Layer names follow the mmseg state-dict keys (``stem_0``, ``layer3_1_conv2``,
``layer2_0_downsample_1`` ...), and ``reference_weight_mapping()`` maps mmseg keys (without
the ``backbone.`` prefix) for ``keras_segattn.convert.load_reference_weights``. mmcv's ImageNet
checkpoints (``open-mmlab://resnet{18,50,101}_v1c``: standalone state dicts whose classifier
``fc.*`` a backbone does not use, ``reference_ignored_prefixes``) load directly::

    backbone = get_backbone("resnet101_v1c")
    load_reference_weights(backbone, "resnet101_v1c-e67eebb6.pth")

or with ``get_backbone("resnet101_v1c", weights="imagenet")``, which downloads the file once.
Input normalisation: mmseg's ImageNet mean/std (the default).
"""

import keras
import keras_hub

from keras_segattn import convert
from keras_segattn.backbones import pyramid
from keras_segattn.backbones.dilation import (
    block_rates, validate_multi_grid, validate_output_stride,
)
from keras_segattn.layers.batch_norm import BatchNormalization
from keras_segattn.layers.conv import Conv2D

BN_EPSILON = 1e-5  # PyTorch BatchNorm2d
BN_MOMENTUM = 0.9  # Keras meaning; PyTorch momentum 0.1


def _bn(name, dtype):
    return BatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                              dtype=dtype, name=name)


def _relu(name, dtype):
    return keras.layers.Activation("relu", dtype=dtype, name=name)


def _conv(x, filters, kernel_size, stride, rate, name, dtype):
    """Bias-free conv with PyTorch padding ``rate * (k - 1) // 2`` on both sides."""
    padding = "same"
    if stride > 1:
        padding = "valid"
        pad = rate * (kernel_size - 1) // 2
        if pad:
            # Symmetric like torch's Conv2d(padding=pad); "same" would pad bottom/right only.
            x = keras.layers.ZeroPadding2D(pad, dtype=dtype, name=name + "_pad")(x)
    return Conv2D(
        filters, kernel_size, strides=stride, padding=padding, dilation_rate=rate,
        use_bias=False, dtype=dtype, name=name,
    )(x)


def _bottleneck(x, filters, stride, rate, conv_shortcut, name, dtype):
    """mmseg ``Bottleneck`` (style="pytorch"): 1x1 -> 3x3 (stride, dilation) -> 1x1 (x4)."""
    shortcut = x
    if conv_shortcut:
        shortcut = _conv(x, 4 * filters, 1, stride, 1, name + "_downsample_0", dtype)
        shortcut = _bn(name + "_downsample_1", dtype)(shortcut)
    x = _conv(x, filters, 1, 1, 1, name + "_conv1", dtype)
    x = _relu(name + "_relu1", dtype)(_bn(name + "_bn1", dtype)(x))
    x = _conv(x, filters, 3, stride, rate, name + "_conv2", dtype)
    x = _relu(name + "_relu2", dtype)(_bn(name + "_bn2", dtype)(x))
    x = _conv(x, 4 * filters, 1, 1, 1, name + "_conv3", dtype)
    x = _bn(name + "_bn3", dtype)(x)
    x = keras.layers.Add(dtype=dtype, name=name + "_add")([x, shortcut])
    return _relu(name + "_out", dtype)(x)


def _basic_block(x, filters, stride, rate, conv_shortcut, name, dtype):
    """mmseg ``BasicBlock``: 3x3 (stride, dilation) -> 3x3 (never dilated, as in mmseg)."""
    shortcut = x
    if conv_shortcut:
        shortcut = _conv(x, filters, 1, stride, 1, name + "_downsample_0", dtype)
        shortcut = _bn(name + "_downsample_1", dtype)(shortcut)
    x = _conv(x, filters, 3, stride, rate, name + "_conv1", dtype)
    x = _relu(name + "_relu1", dtype)(_bn(name + "_bn1", dtype)(x))
    x = _conv(x, filters, 3, 1, 1, name + "_conv2", dtype)
    x = _bn(name + "_bn2", dtype)(x)
    x = keras.layers.Add(dtype=dtype, name=name + "_add")([x, shortcut])
    return _relu(name + "_out", dtype)(x)


def v1c_block_rates(block_type, stackwise_blocks, stackwise_strides, output_stride,
                    multi_grid=None, contract_dilation=True):
    """Per stage, per block: ``(stride, dilation)`` of the block's strided 3x3 conv
    (bottleneck ``conv2``, basic block ``conv1``) in ``DilatedResNetV1cBackbone``.

    Every other 3x3 conv of a bottleneck has the same dilation; a basic block's ``conv2`` is
    never dilated (mmseg). ``block_type`` does not change the rates.
    """
    del block_type
    rates = block_rates(stackwise_blocks, stackwise_strides, output_stride, multi_grid,
                        contract_dilation)
    return [[(stride, first) for stride, first, _ in stage] for stage in rates]


@keras.saving.register_keras_serializable(package="keras_segattn")
class DilatedResNetV1cBackbone(keras_hub.models.FeaturePyramidBackbone):
    """mmsegmentation ``ResNetV1c`` (deep stem, ``style="pytorch"``) with dilation.

    See the module docstring: same layers, padding and BN epsilon as mmseg's ``ResNetV1c``, so
    an mmseg checkpoint's ``backbone.*`` weights port exactly with
    ``keras_segattn.convert.load_reference_weights(backbone, state_dict,
    strip_prefix="backbone.")``, and mmcv's ImageNet checkpoints without a prefix. Layer names
    are the mmseg module paths with ``_`` for ``.`` (``stem_0`` ... ``stem_8``,
    ``layer{i}_{j}_conv{1,2,3}``, ``layer{i}_{j}_bn{1,2,3}``, ``layer{i}_{j}_downsample_{0,1}``;
    block outputs ``layer{i}_{j}_out``).

    Args:
        stackwise_filters, stackwise_blocks, stackwise_strides: mmseg's
            ``base_channels * 2**i``, ``arch_settings``, ``strides``.
        block_type: ``"block"`` (bottleneck) or ``"basic_block"``.
        include_rescaling: must be ``False`` (kept for the configs of saved models).
        output_stride: 8, 16 or 32. mmseg's ``*-d8`` configs (``strides=(1, 2, 1, 1)``,
            ``dilations=(1, 1, 2, 4)``) are ``output_stride=8``; ``*-d16`` are 16.
        multi_grid: optional per-block multipliers of the last stage's rate (cycled).
        stem_channels: int, width of the deep stem's output (its first convs have half).
            Default 64 (mmseg).
        contract_dilation: bool. Default True (mmseg's dilated configs): the first block of a
            dilated stage uses half the stage's dilation. False: the full rate.
        input_normalization: default ``None``: mmseg's ImageNet mean/std.
        input_shape, input_tensor, dtype: the input and the layers' dtype policy.

    Example:
    ```python
    backbone = DilatedResNetV1cBackbone(
        stackwise_filters=[8, 16, 32, 64], stackwise_blocks=[1, 1, 2, 2],
        stackwise_strides=[1, 2, 2, 2], stem_channels=16, output_stride=8,
    )
    backbone(np.zeros((1, 33, 47, 3))).shape  # (1, 5, 6, 256)
    ```
    """

    # mmcv's ImageNet checkpoints carry the classifier, which a backbone does not have.
    reference_ignored_prefixes = ("fc.",)

    def __init__(self, *, stackwise_filters, stackwise_blocks, stackwise_strides,
                 include_rescaling=False, output_stride=32, multi_grid=None, stem_channels=64,
                 contract_dilation=True, input_normalization=None,
                 input_shape=(None, None, 3), input_tensor=None, block_type="block",
                 dtype=None, **kwargs):
        if block_type not in ("block", "basic_block"):
            raise ValueError(
                f'block_type must be "block" or "basic_block", got {block_type!r}.'
            )
        if include_rescaling:
            raise ValueError(
                "DilatedResNetV1cBackbone: include_rescaling must be False; set "
                "input_normalization instead (mmseg's mean/std is the default)."
            )
        stem_channels_int = int(stem_channels)
        if stem_channels_int < 2 or stem_channels_int % 2 or stem_channels_int != stem_channels:
            raise ValueError(
                f"stem_channels must be an even int >= 2 (the deep stem's first two convs have "
                f"stem_channels // 2 channels), got {stem_channels!r}."
            )
        output_stride = validate_output_stride(output_stride)
        multi_grid = validate_multi_grid(multi_grid)
        rates = v1c_block_rates(block_type, stackwise_blocks, stackwise_strides, output_stride,
                                multi_grid, bool(contract_dilation))
        block_fn = _bottleneck if block_type == "block" else _basic_block
        expansion = 4 if block_type == "block" else 1

        if input_tensor is None:
            inputs = keras.layers.Input(shape=tuple(input_shape))
        elif not keras.backend.is_keras_tensor(input_tensor):
            inputs = keras.layers.Input(tensor=input_tensor, shape=tuple(input_shape))
        else:
            inputs = input_tensor
        # Deep stem: mmseg ``stem`` = Sequential(conv, bn, relu, conv, bn, relu, conv, bn, relu).
        x = inputs
        for index, (filters, stride) in enumerate(
            [(stem_channels_int // 2, 2), (stem_channels_int // 2, 1), (stem_channels_int, 1)]
        ):
            x = _conv(x, filters, 3, stride, 1, f"stem_{3 * index}", dtype)
            x = _bn(f"stem_{3 * index + 1}", dtype)(x)
            x = _relu(f"stem_{3 * index + 2}", dtype)(x)
        # MaxPool2d(3, stride 2, padding 1): zero padding == -inf padding after the ReLU.
        x = keras.layers.ZeroPadding2D(1, dtype=dtype, name="maxpool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", dtype=dtype,
                                      name="maxpool")(x)

        outputs, level_names = {}, {}
        channels = stem_channels_int
        for stage, stage_rates in enumerate(rates):
            out_channels = expansion * stackwise_filters[stage]
            for block, (stride, rate) in enumerate(stage_rates):
                name = f"layer{stage + 1}_{block}"
                x = block_fn(x, stackwise_filters[stage], stride, rate,
                             conv_shortcut=stride != 1 or channels != out_channels, name=name,
                             dtype=dtype)
                channels = out_channels
            outputs[f"P{stage + 2}"] = x
            level_names[f"P{stage + 2}"] = f"{name}_out"
        super().__init__(inputs=inputs, outputs=x, dtype=dtype, **kwargs)

        self.stackwise_filters = list(stackwise_filters)
        self.stackwise_blocks = list(stackwise_blocks)
        self.stackwise_strides = list(stackwise_strides)
        self.include_rescaling = False
        self.input_tensor = input_tensor
        self.block_type = block_type
        self.output_stride = output_stride
        self.multi_grid = multi_grid
        self.stem_channels = stem_channels_int
        self.contract_dilation = bool(contract_dilation)
        self.input_normalization = pyramid.check_normalization(input_normalization)
        self.pyramid_outputs = outputs
        self.pyramid_level_inputs = level_names
        # Informational: the largest 3x3 dilation in each stage (multi-grid included).
        self.stackwise_dilations = [max(rate for _, rate in stage) for stage in rates]

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
            "stem_channels": self.stem_channels,
            "contract_dilation": self.contract_dilation,
            "input_normalization": self.input_normalization,
        })
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

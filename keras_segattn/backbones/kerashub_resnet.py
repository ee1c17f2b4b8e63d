"""Dilated ResNets with KerasHub's layouts, so KerasHub's ImageNet presets load into them.

KerasHub's ``ResNetBackbone`` (keras-team/keras-hub ``keras_hub/src/models/resnet/
resnet_backbone.py``, 0.32) builds three ResNet layouts, none of them dilated:

* **V1** (``block_type="basic_block"`` / ``"bottleneck_block"``, ``use_pre_activation=False``):
  He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385, as
  torchvision/timm build it ("v1.5"): 7x7 stem, the stride on the bottleneck's 3x3 conv,
  PyTorch padding (explicit ``ZeroPadding2D`` before strided convs), BN epsilon 1e-5. Its
  ImageNet presets are timm's "ResNet strikes back" weights (``resnet_{18,50,101,152}_
  imagenet``; ``hf://timm/resnet34.a1_in1k`` through KerasHub's timm loader for depth 34).
* **vd** (``"basic_block_vd"`` / ``"bottleneck_block_vd"``): He et al., "Bag of Tricks for
  Image Classification with Convolutional Neural Networks", CVPR 2019, arXiv:1812.01187:
  deep 3x3 stem (32-32-64), downsampling shortcut = 2x2 average pool + 1x1 conv (PaddleClas
  ``ResNet_vd`` weights, ``resnet_vd_{18,34,50,101,152}_imagenet``).
* **V2** (``use_pre_activation=True``): He et al., "Identity Mappings in Deep Residual
  Networks", ECCV 2016, arXiv:1603.05027: pre-activation blocks, stride on the first block's
  3x3 conv, ``post_bn``/``post_relu`` after the last stage (timm ``resnetv2_{50,101}``
  weights, ``resnet_v2_{50,101}_imagenet``).

``DilatedKerasHubResNetBackbone`` rebuilds exactly KerasHub's graph -- the same layers, layer
names, weight shapes and padding -- and only changes the strides and dilation rates of the
convolutions for ``output_stride`` 8 or 16 (``dilation.block_rates``: at OS8 stage 3 runs at
rate 2 and stage 4 at rate 4, the first block of each keeping half the rate in its strided
conv, as in mmsegmentation, torchvision and the official DANet code). A removed stride also
removes the vd shortcut's average pool (mmseg's ``avg_down`` does the same) and the explicit
padding before the conv. At output stride 32 the graph *is* KerasHub's, so a KerasHub preset's
weights give KerasHub's outputs exactly (tested).

Features: ``pyramid_outputs`` (KerasHub ``FeaturePyramidBackbone``) are the four stage
outputs ``P2``..``P5`` (64/128/256/512 channels x4 for bottlenecks); the keys keep KerasHub's
naming after dilation (at OS8, P3, P4 and P5 all have stride 8). For V2, P5 is taken before
``post_bn``/``post_relu`` (KerasHub convention). ``pyramid_level_inputs`` gives the same
levels as layer names (KerasCV convention).

``input_normalization`` (stored in ``get_config()``) is what the weights expect of RGB input
in ``[0, 255]``: the preset's image converter when built with ``from_preset`` /
``get_backbone(..., weights=preset)``, ImageNet mean/std otherwise.
"""

import keras
import keras_hub
from keras import ops

from keras_segattn.backbones import pyramid, weights
from keras_segattn.backbones.dilation import (
    block_rates, validate_multi_grid, validate_output_stride,
)
from keras_segattn.layers.batch_norm import BatchNormalization
from keras_segattn.layers.conv import Conv2D

BLOCK_TYPES = ("basic_block", "bottleneck_block", "basic_block_vd", "bottleneck_block_vd")
BN_EPSILON = 1e-5  # KerasHub / PyTorch
BN_MOMENTUM = 0.9  # Keras meaning; PyTorch momentum 0.1


def _bn(name, dtype):
    return BatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                              dtype=dtype, name=name)


def _relu(name, dtype):
    return keras.layers.Activation("relu", dtype=dtype, name=name)


def _conv3x3(x, filters, stride, rate, name, dtype):
    """3x3 conv, bias-free. Strided: symmetric padding 1 + "valid" (PyTorch's ``padding=1``;
    KerasHub's layer ``<name>_pad``); else "same", which pads ``rate`` on each side."""
    if stride > 1:
        x = keras.layers.ZeroPadding2D(1, dtype=dtype, name=name[: -len("conv")] + "pad")(x)
    return Conv2D(
        filters, 3, strides=stride, padding="valid" if stride > 1 else "same",
        dilation_rate=rate, use_bias=False, dtype=dtype, name=name,
    )(x)


def _block(x, filters, stride, first_rate, rate, conv_shortcut, bottleneck, vd, preact, dtype,
           name):
    """One KerasHub residual block (``apply_{basic,bottleneck}_block[_vd]``) with dilation."""
    channels = 4 * filters if bottleneck else filters
    x_preact = None
    if preact:
        x_preact = _bn(f"{name}_pre_activation_bn", dtype)(x)
        x_preact = _relu(f"{name}_pre_activation_relu", dtype)(x_preact)
    shortcut = x
    if conv_shortcut:
        if x_preact is not None:
            shortcut = x_preact
        elif vd and stride > 1:
            shortcut = keras.layers.AveragePooling2D(
                2, strides=stride, padding="same", dtype=dtype, name=f"{name}_0_pool")(x)
        shortcut = Conv2D(
            channels, 1, strides=1 if vd else stride, use_bias=False, dtype=dtype,
            name=f"{name}_0_conv")(shortcut)
        if not preact:
            shortcut = _bn(f"{name}_0_bn", dtype)(shortcut)
    x = x_preact if x_preact is not None else x
    if bottleneck:
        x = Conv2D(filters, 1, use_bias=False, dtype=dtype, name=f"{name}_1_conv")(x)
        x = _relu(f"{name}_1_relu", dtype)(_bn(f"{name}_1_bn", dtype)(x))
        x = _conv3x3(x, filters, stride, first_rate, f"{name}_2_conv", dtype)
        x = _relu(f"{name}_2_relu", dtype)(_bn(f"{name}_2_bn", dtype)(x))
        x = Conv2D(channels, 1, use_bias=False, dtype=dtype, name=f"{name}_3_conv")(x)
        last_bn = f"{name}_3_bn"
    else:
        x = _conv3x3(x, filters, stride, first_rate, f"{name}_1_conv", dtype)
        x = _relu(f"{name}_1_relu", dtype)(_bn(f"{name}_1_bn", dtype)(x))
        x = _conv3x3(x, filters, 1, rate, f"{name}_2_conv", dtype)
        last_bn = f"{name}_2_bn"
    if preact:
        return keras.layers.Add(dtype=dtype, name=f"{name}_out")([shortcut, x])
    x = _bn(last_bn, dtype)(x)
    x = keras.layers.Add(dtype=dtype, name=f"{name}_add")([shortcut, x])
    return _relu(f"{name}_out", dtype)(x)


def _check_layout(input_conv_filters, input_conv_kernel_sizes, stackwise_num_filters,
                  stackwise_num_blocks, stackwise_num_strides, block_type, use_pre_activation,
                  data_format):
    if block_type not in BLOCK_TYPES:
        raise ValueError(f"block_type must be one of {BLOCK_TYPES}, got {block_type!r}.")
    if len(input_conv_filters) != len(input_conv_kernel_sizes) or not input_conv_filters:
        raise ValueError(
            "input_conv_filters and input_conv_kernel_sizes must be non-empty and of the same "
            f"length, got {input_conv_filters!r} and {input_conv_kernel_sizes!r}."
        )
    lengths = {len(stackwise_num_filters), len(stackwise_num_blocks), len(stackwise_num_strides)}
    if lengths != {4}:
        raise ValueError(
            "stackwise_num_filters, stackwise_num_blocks and stackwise_num_strides must have 4 "
            f"entries (the stages P2..P5), got {stackwise_num_filters!r}, "
            f"{stackwise_num_blocks!r}, {stackwise_num_strides!r}."
        )
    if use_pre_activation and block_type.endswith("_vd"):
        raise ValueError(
            f"block_type={block_type!r} with use_pre_activation=True is not a valid layout: "
            "KerasHub's vd blocks take a pre-activation shortcut without downsampling."
        )
    data_format = data_format or keras.config.image_data_format()
    if data_format != "channels_last":
        raise ValueError(
            f"data_format={data_format!r} is not supported: keras_segattn models are "
            "channels_last (B, H, W, C)."
        )


@keras.saving.register_keras_serializable(package="keras_segattn")
class DilatedKerasHubResNetBackbone(keras_hub.models.FeaturePyramidBackbone):
    """KerasHub ResNet (V1, vd or V2) with dilation: output stride 8, 16 or 32.

    Same arguments, layers, layer names and weight shapes as
    ``keras_hub.models.ResNetBackbone`` (see the module docstring), plus:

    Args:
        output_stride: 8, 16 or 32 (32: KerasHub's network unchanged). Default 32.
        multi_grid: optional sequence, e.g. ``(1, 2, 4)``: per-block dilation multipliers of
            the last stage (cycled over its blocks).
        input_normalization: ``{"mean": [r, g, b], "std": [r, g, b]}`` in pixel units for RGB
            input in ``[0, 255]`` (or a KerasHub ``ImageConverter``): what the weights
            expect. Default ``None``: ImageNet mean/std (the statistics of every KerasHub
            ResNet preset's image converter and of mmsegmentation).
        input_conv_filters, input_conv_kernel_sizes, stackwise_num_filters,
            stackwise_num_blocks, stackwise_num_strides, block_type, use_pre_activation,
            image_shape, data_format, dtype: as in ``keras_hub.models.ResNetBackbone``
            (only ``channels_last``; the first stage may be narrower than 64 channels).

    Example:
    ```python
    backbone = DilatedKerasHubResNetBackbone.from_preset("resnet_50_imagenet", output_stride=8)
    features = keras.Model(backbone.inputs, backbone.pyramid_outputs)  # P3..P5 at stride 8

    tiny = DilatedKerasHubResNetBackbone(
        input_conv_filters=[16], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[8, 16, 32, 64], stackwise_num_blocks=[1, 1, 2, 2],
        stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block", output_stride=8,
    )
    tiny(np.zeros((1, 64, 64, 3))).shape  # (1, 8, 8, 256)
    ```
    """

    def __init__(self, input_conv_filters, input_conv_kernel_sizes, stackwise_num_filters,
                 stackwise_num_blocks, stackwise_num_strides, block_type,
                 use_pre_activation=False, output_stride=32, multi_grid=None,
                 input_normalization=None, image_shape=(None, None, 3), data_format=None,
                 dtype=None, **kwargs):
        _check_layout(input_conv_filters, input_conv_kernel_sizes, stackwise_num_filters,
                      stackwise_num_blocks, stackwise_num_strides, block_type,
                      use_pre_activation, data_format)
        output_stride = validate_output_stride(output_stride)
        multi_grid = validate_multi_grid(multi_grid)
        rates = block_rates(stackwise_num_blocks, stackwise_num_strides, output_stride,
                            multi_grid)
        bottleneck = block_type.startswith("bottleneck")
        vd = block_type.endswith("_vd")
        preact = bool(use_pre_activation)

        # === Functional model: KerasHub ResNetBackbone's graph ===
        inputs = keras.layers.Input(shape=tuple(image_shape))
        x = keras.layers.ZeroPadding2D((input_conv_kernel_sizes[0] - 1) // 2, dtype=dtype,
                                       name="conv1_pad")(inputs)
        x = Conv2D(input_conv_filters[0], input_conv_kernel_sizes[0], strides=2,
                   padding="valid", use_bias=False, dtype=dtype, name="conv1_conv")(x)
        for index in range(1, len(input_conv_filters)):
            x = _relu(f"conv{index}_relu", dtype)(_bn(f"conv{index}_bn", dtype)(x))
            x = Conv2D(input_conv_filters[index], input_conv_kernel_sizes[index],
                       padding="same", use_bias=False, dtype=dtype,
                       name=f"conv{index + 1}_conv")(x)
        if preact:
            # -inf padding, so that padded zeros never win the max-pool (KerasHub V2).
            x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=float("-inf"))
        else:
            stem = len(input_conv_filters)
            x = _relu(f"conv{stem}_relu", dtype)(_bn(f"conv{stem}_bn", dtype)(x))
            x = keras.layers.ZeroPadding2D(1, dtype=dtype, name="pool1_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, dtype=dtype, name="pool1_pool")(x)

        outputs, level_names = {}, {}
        for stage, stage_rates in enumerate(rates):
            first_shortcut = block_type != "basic_block" or stage > 0
            for block, (stride, first_rate, rate) in enumerate(stage_rates):
                name = f"stack{stage}_block{block}"
                x = _block(x, stackwise_num_filters[stage], stride, first_rate, rate,
                           conv_shortcut=first_shortcut and block == 0, bottleneck=bottleneck,
                           vd=vd, preact=preact, dtype=dtype, name=name)
            outputs[f"P{stage + 2}"] = x
            level_names[f"P{stage + 2}"] = f"{name}_out"
        if preact:
            x = _relu("post_relu", dtype)(_bn("post_bn", dtype)(x))
        super().__init__(inputs=inputs, outputs=x, dtype=dtype, **kwargs)

        # === Config ===
        self.input_conv_filters = list(input_conv_filters)
        self.input_conv_kernel_sizes = list(input_conv_kernel_sizes)
        self.stackwise_num_filters = list(stackwise_num_filters)
        self.stackwise_num_blocks = list(stackwise_num_blocks)
        self.stackwise_num_strides = list(stackwise_num_strides)
        self.block_type = block_type
        self.use_pre_activation = preact
        self.image_shape = tuple(image_shape)
        self.data_format = "channels_last"
        self.output_stride = output_stride
        self.multi_grid = multi_grid
        self.input_normalization = pyramid.check_normalization(input_normalization)
        self.pyramid_outputs = outputs
        self.pyramid_level_inputs = level_names
        # Informational: the largest 3x3 dilation of each stage (multi-grid included).
        self.stackwise_dilations = [
            max(first if bottleneck else max(first, rate) for _, first, rate in stage_rates)
            for stage_rates in rates
        ]

    def get_config(self):
        config = super().get_config()
        config.update({
            "input_conv_filters": self.input_conv_filters,
            "input_conv_kernel_sizes": self.input_conv_kernel_sizes,
            "stackwise_num_filters": self.stackwise_num_filters,
            "stackwise_num_blocks": self.stackwise_num_blocks,
            "stackwise_num_strides": self.stackwise_num_strides,
            "block_type": self.block_type,
            "use_pre_activation": self.use_pre_activation,
            "image_shape": self.image_shape,
            "output_stride": self.output_stride,
            "multi_grid": self.multi_grid,
            "input_normalization": self.input_normalization,
        })
        return config

    def layout(self):
        """The KerasHub ``ResNetBackbone`` arguments of this network (no dilation)."""
        return {key: getattr(self, key) for key in LAYOUT_KEYS}

    @classmethod
    def from_preset(cls, preset, load_weights=True, output_stride=32, multi_grid=None,
                    input_normalization=None, image_shape=(None, None, 3), **kwargs):
        """A dilated backbone with the layout (and weights) of a KerasHub ResNet preset.

        Args:
            preset: a KerasHub preset name (``"resnet_101_imagenet"``), a handle
                (``"kaggle://..."``, ``"hf://timm/resnet34.a1_in1k"``) or a local preset
                directory (``save_to_preset`` of a KerasHub ``ResNetBackbone`` or of this class).
            load_weights: load the preset's weights (default) or keep random ones.
            output_stride, multi_grid, image_shape: as in the constructor.
            input_normalization: ``None`` (default): the preset's image converter (ImageNet
                mean/std with a warning when it has none); or an explicit value.

        Raises:
            WeightsNotAvailableError: the preset could not be downloaded (no network), saying
                what to download and where to put it.
            ValueError: the preset is not a ResNet.
        """
        source, normalization = weights.read_kerashub_preset(preset, load_weights=load_weights)
        config = layout_of(source, preset)
        model = cls(**config, output_stride=output_stride, multi_grid=multi_grid,
                    input_normalization=input_normalization or normalization,
                    image_shape=image_shape, **kwargs)
        if load_weights:
            weights.copy_weights_by_name(source, model, f"preset {preset!r}")
        return model


LAYOUT_KEYS = ("input_conv_filters", "input_conv_kernel_sizes", "stackwise_num_filters",
               "stackwise_num_blocks", "stackwise_num_strides", "block_type",
               "use_pre_activation")


def layout_of(backbone, where):
    """The ResNet layout arguments of a KerasHub ``ResNetBackbone`` (or of ours)."""
    if not isinstance(backbone, (keras_hub.models.ResNetBackbone, DilatedKerasHubResNetBackbone)):
        raise ValueError(
            f"{where} holds a {type(backbone).__name__}, not a KerasHub ResNetBackbone; "
            "only ResNet layouts load into DilatedKerasHubResNetBackbone."
        )
    return {key: getattr(backbone, key) for key in LAYOUT_KEYS}


def from_kerashub_resnet(backbone, output_stride=32, multi_grid=None, input_normalization=None,
                         image_shape=None, name=None):
    """Rebuild a KerasHub ``ResNetBackbone`` (or a ``DilatedKerasHubResNetBackbone``) dilated
    at ``output_stride``, with a copy of its weights (the instance itself is unchanged)."""
    layout = layout_of(backbone, f"backbone {backbone.name!r}")
    if getattr(backbone, "data_format", "channels_last") != "channels_last":
        raise ValueError(
            f"backbone {backbone.name!r} is channels_first; keras_segattn needs channels_last."
        )
    if input_normalization is None:
        input_normalization = getattr(backbone, "input_normalization", None)
    model = DilatedKerasHubResNetBackbone(
        **layout, output_stride=output_stride, multi_grid=multi_grid,
        input_normalization=input_normalization,
        image_shape=tuple(image_shape or backbone.input_shape[1:]),
        dtype=backbone.dtype_policy, name=name or f"{backbone.name}_os{output_stride}",
    )
    weights.copy_weights_by_name(backbone, model, f"backbone {backbone.name!r}")
    return model

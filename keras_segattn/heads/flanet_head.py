"""FLANet heads: Fully Attentional Network (``FLANetHead`` and ``FLANetOutput``).

Qi Song, Jie Li, Chenghong Li, Hao Guo, Rui Huang, "Fully Attentional Network for Semantic
Segmentation", AAAI 2022, arXiv:2112.04108.

Reference: ``maggiesong7/FullyAttentional`` @ ``52af4fdf210df0503fab936b35a3508cb5198811``,
``model.py`` (model code only: no training script, configs or losses were released).

Architecture (as in the reference)::

    C5 (2048) -> [3x3 conv 512, BN, ReLU] x 2 -> FullyAttentional(512) -> fa
    concat([C5, fa]) (2560) -> FLANetOutput(512) -> logits
    C3 (layer2, 512)  -> FLANetOutput(64) -> aux_stage2
    C4 (layer3, 1024) -> FLANetOutput(64) -> aux_stage3

``FLANetOutput``: nearest x2 upsampling, 3x3 conv (no bias), BN, ReLU, Dropout2d(0.1), 1x1 conv
with bias. Every output is then bilinearly resized to the input with ``align_corners=True``.

UNVERIFIED / deviations:
* Auxiliary loss weights are not in the released code; 0.4 each (the usual deep-supervision
  weight) is our choice.
* The reference initialises every conv with ``kaiming_normal_(a=1)``; we keep Keras' default
  Glorot-uniform init (irrelevant once weights are trained or ported).
* The official FullyAttentionalBlock pairs descriptors across samples for batch > 1 (a bug,
  see mechanisms.md section 7); ``keras_segattn.layers.FullyAttentional`` pairs every sample with
  its own descriptors (identical to the reference for batch 1).
"""

import keras
from keras import ops

from keras_segattn import convert
from keras_segattn import layers as sa_layers
from keras_segattn.heads.base import Head, check_rank4
from keras_segattn.layers.conv_bn_act import ConvBNAct


@keras.saving.register_keras_serializable(package="keras_segattn")
class FLANetOutput(Head):
    """FLANet's output block: ``conv1x1(Dropout2d(ReLU(BN(conv3x3(Upsample_x2(x))))))``.

    The x2 upsampling is nearest-neighbour (``nn.Upsample(scale_factor=2)`` without a mode).

    Input ``(B, H, W, C)``; output float32 logits ``(B, 2H, 2W, num_classes)``.

    Args:
        num_classes: int.
        mid_channels: int, width of the 3x3 conv. Default 512 (64 for the auxiliary outputs).
        dropout: float, Dropout2d rate. Default 0.1.
        activation: ``"relu"`` (reference) or ``"leaky_relu"`` (slope 0.01).
        in_levels, output_names, loss_weights: see ``Head`` (FLANet's auxiliary outputs:
            ``in_levels=("P3",), output_names="aux_stage2"`` and ``("P4",)``,
            ``"aux_stage3"``, loss weight 0.4 each).

    Reference keys (``FLANetOutput`` in ``model.py``, an ``nn.Sequential`` of Upsample,
    Conv2d, BN, ReLU, Dropout2d, Conv2d): ``conv.1.weight``, ``conv.2.*`` (BN),
    ``conv.5.{weight,bias}``.

    Example:
    >>> tuple(FLANetOutput(19, mid_channels=16)(keras.ops.ones((1, 5, 7, 8))).shape)
    (1, 10, 14, 19)
    """

    def __init__(self, num_classes, mid_channels=512, dropout=0.1, activation="relu", **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        self.mid_channels = int(mid_channels)
        self.conv = ConvBNAct(self.mid_channels, kernel_size=3, activation=activation,
                              dtype=self.dtype_policy, name="conv")
        self._make_classifier("conv_seg")

    def build_head(self, input_shape):
        check_rank4("FLANetOutput", input_shape)
        shape = (input_shape[0], None, None, input_shape[-1])
        self.conv.build(shape)
        self.conv_seg.build(shape[:3] + (self.mid_channels,))

    def decode(self, inputs, training=None):
        # Nearest x2: (B, H, W, C) -> (B, 2H, 2W, C).
        x = ops.repeat(ops.repeat(inputs, 2, axis=1), 2, axis=2)
        x = self.conv(x, training=training)
        return self._classify(x, training)

    def output_spec(self, inputs):
        double = lambda size: None if size is None else 2 * size  # noqa: E731
        shape = (inputs.shape[0], double(inputs.shape[1]), double(inputs.shape[2]),
                 self.num_classes)
        return keras.KerasTensor(shape, dtype="float32")

    def reference_weight_mapping(self):
        mapping = self.conv.reference_weight_mapping("conv.1", "conv.2")
        mapping.update(convert.conv_mapping("conv.5", self.conv_seg))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({"mid_channels": self.mid_channels})
        return config


@keras.saving.register_keras_serializable(package="keras_segattn")
class FLANetHead(Head):
    """FLANet head: ``FLANetOutput(concat([x, FA(conv(conv(x)))]))``.

    ``conv`` = 3x3 conv (no bias) -> BN -> activation, ``in -> channels -> channels``;
    ``FA`` = ``keras_segattn.layers.FullyAttentional`` (itself ending in a 3x3 conv-BN-ReLU).

    Input: the last backbone feature ``(B, H, W, C)`` (C = 2048 on ResNet-50/101). Output:
    float32 logits ``(B, 2H, 2W, num_classes)`` (FLANetOutput upsamples x2).

    Args:
        num_classes: int.
        channels: int, width of the head. Default 512.
        dropout: float, Dropout2d rate in the output block. Default 0.1.
        activation: ``"relu"`` (reference) or ``"leaky_relu"`` (slope 0.01).
        in_levels, output_names, loss_weights: see ``Head``.

    Example:
    >>> tuple(FLANetHead(19, channels=16)(keras.ops.ones((1, 6, 5, 32))).shape)
    (1, 12, 10, 19)
    """

    def __init__(self, num_classes, channels=512, dropout=0.1, activation="relu", **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        self.channels = int(channels)
        block = dict(kernel_size=3, activation=activation, dtype=self.dtype_policy)
        self.conv_a = ConvBNAct(self.channels, name="conv_a", **block)
        self.conv_b = ConvBNAct(self.channels, name="conv_b", **block)
        self.attention = sa_layers.FullyAttentional(dtype=self.dtype_policy, name="attention")
        self.output_block = FLANetOutput(self.num_classes, mid_channels=self.channels,
                                         dropout=self.dropout, activation=activation,
                                         dtype=self.dtype_policy, name="output_block")

    def build_head(self, input_shape):
        check_rank4("FLANetHead", input_shape)
        shape = (input_shape[0], None, None, input_shape[-1])
        inner = shape[:3] + (self.channels,)
        self.conv_a.build(shape)
        self.conv_b.build(inner)
        self.attention.build(inner)
        self.output_block.build(shape[:3] + (input_shape[-1] + self.channels,))

    def decode(self, inputs, training=None):
        x = self.conv_b(self.conv_a(inputs, training=training), training=training)
        x = self.attention(x, training=training)
        x = ops.concatenate([inputs, ops.cast(x, inputs.dtype)], axis=-1)
        return self.output_block(x, training=training)

    def output_spec(self, inputs):
        return self.output_block.output_spec(inputs)

    def reference_weight_mapping(self):
        """Keys of the head part of the official ``FLANet`` module (``model.py``):
        ``conv.{0,1,3,4}.*`` (the two conv-BN-ReLU), ``fully.*`` (FullyAttentionalBlock)
        and ``conv_out1.*`` (the main FLANetOutput). The auxiliary outputs are
        ``conv_out2``/``conv_out3`` (map them with their own ``FLANetOutput``)."""
        mapping = self.conv_a.reference_weight_mapping("conv.0", "conv.1")
        mapping.update(self.conv_b.reference_weight_mapping("conv.3", "conv.4"))
        mapping.update(convert.prefixed("fully", self.attention.reference_weight_mapping()))
        mapping.update(convert.prefixed("conv_out1", self.output_block.reference_weight_mapping()))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels})
        return config

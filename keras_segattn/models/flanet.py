"""FLANet: Fully Attentional Network.

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
from keras_segattn.heads.fcn_head import (
    ClassifierHead, check_activation, check_num_classes, check_rank4,
)
from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.models.base import (
    SegmentationModel, build_trunk, register_model, resolve_backbone,
)


@keras.saving.register_keras_serializable(package="keras_segattn")
class FLANetOutput(ClassifierHead):
    """FLANet's output block: ``conv1x1(Dropout2d(ReLU(BN(conv3x3(Upsample_x2(x))))))``.

    The x2 upsampling is nearest-neighbour (``nn.Upsample(scale_factor=2)`` without a mode).

    Input ``(B, H, W, C)``; output float32 logits ``(B, 2H, 2W, num_classes)``.

    Args:
        num_classes: int.
        mid_channels: int, width of the 3x3 conv. Default 512 (64 for the auxiliary outputs).
        dropout: float, Dropout2d rate. Default 0.1.
        activation: ``"relu"`` (reference) or ``"leaky_relu"`` (slope 0.01).

    Reference keys (``FLANetOutput`` in ``model.py``, an ``nn.Sequential`` of Upsample,
    Conv2d, BN, ReLU, Dropout2d, Conv2d): ``conv.1.weight``, ``conv.2.*`` (BN),
    ``conv.5.{weight,bias}``.

    Example:
    >>> FLANetOutput(19, mid_channels=16)(keras.ops.ones((1, 5, 7, 8))).shape
    (1, 10, 14, 19)
    """

    def __init__(self, num_classes, mid_channels=512, dropout=0.1, activation="relu", **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        self.mid_channels = int(mid_channels)
        self.conv = ConvBNAct(self.mid_channels, kernel_size=3, activation=activation,
                              dtype=self.dtype_policy, name="conv")
        self._make_classifier("conv_seg")

    def build(self, input_shape):
        check_rank4("FLANetOutput", input_shape)
        shape = (input_shape[0], None, None, input_shape[-1])
        self.conv.build(shape)
        self.conv_seg.build(shape[:3] + (self.mid_channels,))
        self.built = True

    def call(self, inputs, training=None):
        # Nearest x2: (B, H, W, C) -> (B, 2H, 2W, C).
        x = ops.repeat(ops.repeat(inputs, 2, axis=1), 2, axis=2)
        x = self.conv(x, training=training)
        return self._classify(x, training)

    def compute_output_shape(self, input_shape):
        double = lambda size: None if size is None else 2 * size  # noqa: E731
        return (input_shape[0], double(input_shape[1]), double(input_shape[2]), self.num_classes)

    def reference_weight_mapping(self):
        mapping = self.conv.reference_weight_mapping("conv.1", "conv.2")
        mapping.update(convert.conv_mapping("conv.5", self.conv_seg))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({"mid_channels": self.mid_channels})
        return config


@keras.saving.register_keras_serializable(package="keras_segattn")
class FLANetHead(ClassifierHead):
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

    Example:
    >>> FLANetHead(19, channels=16)(keras.ops.ones((1, 6, 5, 32))).shape
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

    def build(self, input_shape):
        check_rank4("FLANetHead", input_shape)
        shape = (input_shape[0], None, None, input_shape[-1])
        inner = shape[:3] + (self.channels,)
        self.conv_a.build(shape)
        self.conv_b.build(inner)
        self.attention.build(inner)
        self.output_block.build(shape[:3] + (input_shape[-1] + self.channels,))
        self.built = True

    def call(self, inputs, training=None):
        x = self.conv_b(self.conv_a(inputs, training=training), training=training)
        x = self.attention(x, training=training)
        x = ops.concatenate([inputs, ops.cast(x, inputs.dtype)], axis=-1)
        return self.output_block(x, training=training)

    def compute_output_shape(self, input_shape):
        return self.output_block.compute_output_shape(input_shape)

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


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class FLANet(SegmentationModel):
    """FLANet (Song et al., AAAI 2022): dilated ResNet + Fully Attentional head.

    Outputs (dict of float32 logits at the input resolution, resized with ``align_corners``):

    * ``"logits"``: ``FLANetHead`` on stage 4 (``P5``); loss weight 1.0.
    * ``"aux_stage2"``: ``FLANetOutput(64)`` on stage 2 (``P3``, layer2); loss weight 0.4.
    * ``"aux_stage3"``: ``FLANetOutput(64)`` on stage 3 (``P4``, layer3); loss weight 0.4.
      (both only when ``aux_head``; the weights are UNVERIFIED, not in the reference code).

    Args:
        num_classes: int.
        backbone: backbone name or model. Default ``"resnet50"`` (the paper: ResNet-101).
        output_stride: 8 (default, the reference), 16 or 32.
        aux_head: bool, add the two auxiliary outputs. Default True.
        input_shape: ``(H, W, 3)``; ``None`` sizes allowed.
        backbone_weights: backbone weights (``None``: random init).
        align_corners: bool, final bilinear resize. Default True (the reference).
        channels: int, head width. Default 512.
        aux_channels: int, auxiliary output width. Default 64.
        dropout: float, Dropout2d rate. Default 0.1.
        activation: ``"relu"`` or ``"leaky_relu"``.
        aux_loss_weight: float, weight of each auxiliary output. Default 0.4.

    Example:
    >>> model = FLANet(num_classes=19, backbone="resnet_tiny")  # doctest: +SKIP
    >>> model.predict(images).shape  # (B, H, W, 19)  # doctest: +SKIP
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=True,
                 channels=512, aux_channels=64, dropout=0.1, activation="relu",
                 aux_loss_weight=0.4, **kwargs):
        check_num_classes("FLANet", num_classes)
        check_activation("FLANet", activation)
        backbone_model = resolve_backbone(backbone, output_stride=output_stride,
                                          input_shape=input_shape, weights=backbone_weights)
        inputs, features = build_trunk(backbone_model, input_shape)
        head = FLANetHead(num_classes, channels=channels, dropout=dropout,
                          activation=activation, name="head")
        logits = {"logits": head(features["P5"])}
        loss_weights = {"logits": 1.0}
        if aux_head:
            for key, level in (("aux_stage2", "P3"), ("aux_stage3", "P4")):
                aux = FLANetOutput(num_classes, mid_channels=aux_channels, dropout=dropout,
                                   activation=activation, name=f"{key}_head")
                logits[key] = aux(features[level])
                loss_weights[key] = float(aux_loss_weight)
        self._init_from_logits(
            inputs, logits, backbone=backbone_model, num_classes=num_classes,
            loss_weights=loss_weights, align_corners=align_corners,
            init_config=dict(
                num_classes=num_classes, output_stride=output_stride, aux_head=aux_head,
                input_shape=tuple(input_shape), backbone_weights=backbone_weights,
                align_corners=align_corners, channels=channels, aux_channels=aux_channels,
                dropout=dropout, activation=activation, aux_loss_weight=aux_loss_weight,
            ),
            **kwargs,
        )

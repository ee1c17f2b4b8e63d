"""LANet: DANet-style dual head with the Linear Attention Mechanism.

Rui Li, Jianlin Su, Chenxi Duan, Shunyi Zheng, "Linear Attention Mechanism: An Efficient
Attention for Semantic Segmentation", arXiv:2007.14902.

Reference modules: ``lironui/Linear-Attention-Mechanism`` @
``bcf978932c685294cfa2d305dac6e26ccdf55205`` (``PositionLinearAttention``,
``ChannelLinearAttention``; ``keras_segattn.layers.LinearPositionAttention`` /
``LinearChannelAttention``, which fix the reference's H = W restriction). The reference
repository ships the modules only; the paper plugs them into several segmentation networks
[recalled, UNVERIFIED]. This model is **our** assembly: the DANet head (Fu et al., CVPR 2019,
``junfu1115/DANet`` @ ``b0a0fa00``) with its PAM/CAM replaced by the linear modules, as the
follow-up MAResU-Net does for the position branch::

    sa = conv51(LinearPositionAttention(conv5a(C5)))   # conv* = 3x3 conv-BN-act, C5 // 4 wide
    sc = conv52(LinearChannelAttention(conv5c(C5)))
    logits = conv8(Dropout2d(sa + sc))
    aux    = mmseg auxiliary FCNHead on C4 (loss weight 0.4)

DANet's per-branch outputs (conv6/conv7) are left out: there is no evidence the linear-attention
paper used them.
"""

import keras
from keras import ops

from keras_segattn import layers as sa_layers
from keras_segattn.heads.fcn_head import ClassifierHead, check_num_classes, check_rank4
from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.models.base import (
    SegmentationModel, add_aux_fcn_head, build_trunk, register_model, resolve_backbone,
)


@keras.saving.register_keras_serializable(package="keras_segattn")
class LANetHead(ClassifierHead):
    """DANet-style head with linear position and channel attention.

    ``y = cls(Drop(CBR(LPA(CBR(x))) + CBR(LCA(CBR(x)))))``, ``CBR`` = 3x3 conv (no bias) ->
    BN(eps 1e-5) -> activation, ``inter_channels`` wide.

    Input ``(B, H, W, C)``; output float32 logits ``(B, H, W, num_classes)``.

    Args:
        num_classes: int.
        inter_channels: int or ``None`` (``C // 4``, DANet's choice: 512 for C5 = 2048).
        reduction: int, query/key reduction of the position module. Default 8.
        eps: float, the reference's epsilon in both modules. Default 1e-6.
        dropout: float, Dropout2d rate. Default 0.1.
        activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.01).

    Example:
    >>> LANetHead(5)(keras.ops.ones((1, 9, 7, 64))).shape
    (1, 9, 7, 5)
    """

    def __init__(self, num_classes, inter_channels=None, reduction=8, eps=1e-6, dropout=0.1,
                 activation="relu", **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        self.inter_channels = None if inter_channels is None else int(inter_channels)
        self.reduction = int(reduction)
        self.eps = float(eps)
        self.position_attention = sa_layers.LinearPositionAttention(
            reduction=self.reduction, eps=self.eps, dtype=self.dtype_policy, name="sa")
        self.channel_attention = sa_layers.LinearChannelAttention(
            eps=self.eps, dtype=self.dtype_policy, name="sc")
        self._make_classifier("conv8")

    def build(self, input_shape):
        check_rank4("LANetHead", input_shape)
        in_channels = int(input_shape[-1])
        inter = self.inter_channels or in_channels // 4
        if inter < self.reduction:
            raise ValueError(
                f"LANetHead: {inter} inter channels are fewer than the position-attention "
                f"reduction {self.reduction}; use a wider input or set inter_channels."
            )
        block = dict(kernel_size=3, activation=self.activation, dtype=self.dtype_policy)
        self.conv5a = ConvBNAct(inter, name="conv5a", **block)
        self.conv5c = ConvBNAct(inter, name="conv5c", **block)
        self.conv51 = ConvBNAct(inter, name="conv51", **block)
        self.conv52 = ConvBNAct(inter, name="conv52", **block)
        shape = (input_shape[0], None, None, in_channels)
        inner = shape[:3] + (inter,)
        self.conv5a.build(shape)
        self.conv5c.build(shape)
        for layer in (self.position_attention, self.channel_attention, self.conv51,
                      self.conv52, self.conv_seg):
            layer.build(inner)
        self.built = True

    def call(self, inputs, training=None):
        sa = self.position_attention(self.conv5a(inputs, training=training))
        sa = self.conv51(ops.cast(sa, self.compute_dtype), training=training)
        sc = self.channel_attention(self.conv5c(inputs, training=training))
        sc = self.conv52(ops.cast(sc, self.compute_dtype), training=training)
        return self._classify(sa + sc, training)

    def get_config(self):
        config = super().get_config()
        config.update({"inter_channels": self.inter_channels, "reduction": self.reduction,
                       "eps": self.eps})
        return config


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class LANet(SegmentationModel):
    """Linear-attention DANet-style model (see the module docstring).

    Outputs (dict of float32 logits at the input resolution): ``"logits"`` (``LANetHead`` on
    ``P5``, loss weight 1.0) and, when ``aux_head``, ``"aux"`` (auxiliary FCNHead on ``P4``,
    loss weight 0.4).

    Args:
        num_classes: int.
        backbone: backbone name or model. Default ``"resnet50"``.
        output_stride: 8 (default), 16 or 32.
        aux_head: bool. Default True.
        input_shape: ``(H, W, 3)``; ``None`` sizes allowed.
        backbone_weights: backbone weights (``None``: random init).
        align_corners: bool, final bilinear resize. Default False (mmseg).
        inter_channels, reduction, eps, dropout, activation: ``LANetHead`` options
            (``None`` = C5 // 4, 8, 1e-6, 0.1, ``"relu"``).
        aux_channels: int, auxiliary head width. Default 256.

    Example:
    >>> model = LANet(num_classes=6, backbone="resnet_tiny")  # doctest: +SKIP
    >>> model.predict(images).shape  # (B, H, W, 6)  # doctest: +SKIP
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=False,
                 inter_channels=None, reduction=8, eps=1e-6, dropout=0.1, activation="relu",
                 aux_channels=256, **kwargs):
        check_num_classes("LANet", num_classes)
        head = LANetHead(num_classes, inter_channels=inter_channels, reduction=reduction,
                         eps=eps, dropout=dropout, activation=activation, name="head")
        backbone_model = resolve_backbone(backbone, output_stride=output_stride,
                                          input_shape=input_shape, weights=backbone_weights)
        inputs, features = build_trunk(backbone_model, input_shape)
        logits = {"logits": head(features["P5"])}
        loss_weights = {"logits": 1.0}
        if aux_head:
            add_aux_fcn_head(logits, loss_weights, features["P4"], num_classes,
                             channels=aux_channels, dropout=dropout, activation=activation)
        self._init_from_logits(
            inputs, logits, backbone=backbone_model, num_classes=num_classes,
            loss_weights=loss_weights, align_corners=align_corners,
            init_config=dict(
                num_classes=num_classes, output_stride=output_stride, aux_head=aux_head,
                input_shape=tuple(input_shape), backbone_weights=backbone_weights,
                align_corners=align_corners, inter_channels=inter_channels,
                reduction=reduction, eps=eps, dropout=dropout, activation=activation,
                aux_channels=aux_channels,
            ),
            **kwargs,
        )

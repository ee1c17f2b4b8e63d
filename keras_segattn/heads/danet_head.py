"""DANet head: position (PAM) and channel (CAM) attention branches with three classifiers.

Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019
(arXiv 1809.02983). Reference: junfu1115/DANet @ ``b0a0fa00``,
``encoding/models/sseg/danet.py`` ``DANetHead``.
"""

import keras

from keras_segattn import convert
from keras_segattn.heads.fcn_head import apply_classifier, check_activation, check_rank4, make_classifier
from keras_segattn.layers.channel_attention import ChannelAttention
from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.layers.position_attention import PositionAttention


@keras.saving.register_keras_serializable(package="keras_segattn")
class DANetHead(keras.layers.Layer):
    """``DANetHead``: returns ``(fused, position, channel)`` logits (upstream order).

    With ``inter = C // 4`` (512 for a 2048-channel ResNet C5)::

        sa = conv51(PAM(conv5a(x)))        # 3x3 conv-BN-act, PAM (query/key inter/8), 3x3
        sc = conv52(CAM(conv5c(x)))        # 3x3 conv-BN-act, CAM, 3x3
        fused    = conv8(sa + sc)          # each conv6/7/8 = Dropout2d(0.1) -> 1x1 conv + bias
        position = conv6(sa)
        channel  = conv7(sc)

    Input ``(B, H, W, C)``; three float32 outputs ``(B, H, W, num_classes)`` (no upsampling).

    Args:
        num_classes: int.
        inter_channels: int or ``None`` (``C // 4``, the official choice).
        reduction: int, PAM query/key reduction. Default 8 (C/8).
        dropout: float, Dropout2d rate before each classifier. Default 0.1.
        activation: ``"relu"`` (official) or ``"leaky_relu"``.

    Reference weights: the official ``DANetHead`` state dict (``conv5a.0.weight``,
    ``conv5a.1.*``, ``sa.query_conv.weight``, ``sa.gamma``, ``sc.gamma``, ``conv51``,
    ``conv52``, ``conv6.1``, ``conv7.1``, ``conv8.1``).

    Example:
    >>> head = DANetHead(5)
    >>> fused, pam, cam = head(keras.ops.ones((1, 9, 7, 64)))
    >>> fused.shape
    (1, 9, 7, 5)
    """

    def __init__(self, num_classes, inter_channels=None, reduction=8, dropout=0.1,
                 activation="relu", **kwargs):
        super().__init__(**kwargs)
        check_activation("DANetHead", activation)
        self.num_classes = int(num_classes)
        self.inter_channels = None if inter_channels is None else int(inter_channels)
        self.reduction = int(reduction)
        self.dropout = float(dropout)
        self.activation = activation
        self.drop6, self.conv6 = make_classifier(self.num_classes, self.dropout, "conv6")
        self.drop7, self.conv7 = make_classifier(self.num_classes, self.dropout, "conv7")
        self.drop8, self.conv8 = make_classifier(self.num_classes, self.dropout, "conv8")

    def build(self, input_shape):
        check_rank4("DANetHead", input_shape)
        in_channels = int(input_shape[-1])
        inter = self.inter_channels or in_channels // 4
        if inter < self.reduction:
            raise ValueError(
                f"DANetHead: {inter} inter channels (input {in_channels} // 4) are fewer than "
                f"the PAM reduction {self.reduction}; use a wider input or set inter_channels."
            )
        block = dict(kernel_size=3, activation=self.activation, dtype=self.dtype_policy)
        self.conv5a = ConvBNAct(inter, name="conv5a", **block)
        self.conv5c = ConvBNAct(inter, name="conv5c", **block)
        self.sa = PositionAttention(reduction=self.reduction, dtype=self.dtype_policy, name="sa")
        self.sc = ChannelAttention(dtype=self.dtype_policy, name="sc")
        self.conv51 = ConvBNAct(inter, name="conv51", **block)
        self.conv52 = ConvBNAct(inter, name="conv52", **block)
        shape = tuple(input_shape)
        inter_shape = shape[:3] + (inter,)
        for layer in (self.conv5a, self.conv5c):
            layer.build(shape)
        for layer in (self.sa, self.sc, self.conv51, self.conv52, self.conv6, self.conv7, self.conv8):
            layer.build(inter_shape)
        self.built = True

    def call(self, inputs, training=None):
        sa = self.conv51(self.sa(self.conv5a(inputs, training=training)), training=training)
        sc = self.conv52(self.sc(self.conv5c(inputs, training=training)), training=training)
        fused = apply_classifier(self.drop8, self.conv8, sa + sc, training)
        position = apply_classifier(self.drop6, self.conv6, sa, training)
        channel = apply_classifier(self.drop7, self.conv7, sc, training)
        return fused, position, channel

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape[:3]) + (self.num_classes,)
        return shape, shape, shape

    def reference_weight_mapping(self):
        mapping = {}
        for name in ("conv5a", "conv5c", "conv51", "conv52"):
            mapping.update(getattr(self, name).reference_weight_mapping(f"{name}.0", f"{name}.1"))
        mapping.update(convert.prefixed("sa", self.sa.reference_weight_mapping()))
        mapping.update(convert.prefixed("sc", self.sc.reference_weight_mapping()))
        for name in ("conv6", "conv7", "conv8"):
            mapping.update(convert.conv_mapping(f"{name}.1", getattr(self, name)))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes, "inter_channels": self.inter_channels,
            "reduction": self.reduction, "dropout": self.dropout, "activation": self.activation,
        })
        return config

"""DANet head: position (PAM) and channel (CAM) attention branches with three classifiers.

Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019
(arXiv 1809.02983). Reference: junfu1115/DANet @ ``b0a0fa00``,
``encoding/models/sseg/danet.py`` ``DANetHead``.
"""

import keras

from keras_segattn import convert
from keras_segattn.heads.base import Head, apply_classifier, check_rank4, make_classifier, renamed
from keras_segattn.heads.fcn_head import check_mmseg_head
from keras_segattn.layers.channel_attention import ChannelAttention
from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.layers.position_attention import PositionAttention


class DualAttentionHead(Head):
    """DANet's two-branch head, shared by ``DANetHead`` and ``LANetHead``.

    With ``inter = inter_channels or C // 4`` and ``CBR`` = 3x3 conv (no bias) -> BN(eps
    1e-5) -> activation::

        sa = conv51(position_attention(conv5a(x)))
        sc = conv52(channel_attention(conv5c(x)))

    A subclass creates the two attention layers (named ``"sa"`` and ``"sc"``, returned by
    ``attention_layers()``) and its classifiers in ``__init__`` and combines ``sa``/``sc`` in
    ``decode`` (``self.branches(x)``).
    """

    def __init__(self, num_classes, inter_channels=None, reduction=8, dropout=0.1,
                 activation="relu", **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        self.inter_channels = None if inter_channels is None else int(inter_channels)
        self.reduction = int(reduction)

    def build_head(self, input_shape):
        owner = type(self).__name__
        in_channels = check_rank4(owner, input_shape)
        inter = self.inter_channels or in_channels // 4
        if inter < self.reduction:
            raise ValueError(
                f"{owner}: {inter} inter channels (input {in_channels} // 4) are fewer than "
                f"the position-attention reduction {self.reduction}; use a wider input or set "
                "inter_channels."
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
        for layer in (*self.attention_layers(), self.conv51, self.conv52, *self.classifiers()):
            layer.build(inner)

    def attention_layers(self):
        """``(position attention, channel attention)``."""
        raise NotImplementedError

    def classifiers(self):
        """The 1x1 classifier convs, built on the ``inter``-channel branch features."""
        raise NotImplementedError

    def branches(self, inputs, training=None):
        """``(sa, sc)``: the two attention branches in the compute dtype."""
        position, channel = self.attention_layers()
        sa = position(self.conv5a(inputs, training=training))
        sa = self.conv51(keras.ops.cast(sa, self.compute_dtype), training=training)
        sc = channel(self.conv5c(inputs, training=training))
        sc = self.conv52(keras.ops.cast(sc, self.compute_dtype), training=training)
        return sa, sc

    def get_config(self):
        config = super().get_config()
        config.update({"inter_channels": self.inter_channels, "reduction": self.reduction})
        return config


# Official DANetHead names -> mmseg DAHead names (mmseg/models/decode_heads/da_head.py).
MMSEG_RENAMES = (
    ("conv5a.0", "pam_in_conv.conv"), ("conv5a.1", "pam_in_conv.bn"),
    ("sa.query_conv", "pam.query_project"), ("sa.key_conv", "pam.key_project"),
    ("sa.value_conv", "pam.value_project"), ("sa.gamma", "pam.gamma.scale"),
    ("conv51.0", "pam_out_conv.conv"), ("conv51.1", "pam_out_conv.bn"),
    ("conv6.1", "pam_conv_seg"),
    ("conv5c.0", "cam_in_conv.conv"), ("conv5c.1", "cam_in_conv.bn"),
    ("sc.gamma", "cam.gamma.scale"),
    ("conv52.0", "cam_out_conv.conv"), ("conv52.1", "cam_out_conv.bn"),
    ("conv7.1", "cam_conv_seg"),
    ("conv8.1", "conv_seg"),
)


@keras.saving.register_keras_serializable(package="keras_segattn")
class DANetHead(DualAttentionHead):
    """``DANetHead``: three logits, ``(fused, position, channel)`` (upstream order).

    With ``inter = C // 4`` (512 for a 2048-channel ResNet C5)::

        sa = conv51(PAM(conv5a(x)))        # 3x3 conv-BN-act, PAM (query/key inter/8), 3x3
        sc = conv52(CAM(conv5c(x)))        # 3x3 conv-BN-act, CAM, 3x3
        fused    = conv8(sa + sc)          # each conv6/7/8 = Dropout2d(0.1) -> 1x1 conv + bias
        position = conv6(sa)
        channel  = conv7(sc)

    Input ``(B, H, W, C)``; three float32 outputs ``(B, H, W, num_classes)`` (no upsampling),
    named ``"logits"``, ``"pam"``, ``"cam"`` in the feature dict form (loss weight 1.0 each:
    the official code sums the three losses).

    Args:
        num_classes: int.
        inter_channels: int or ``None`` (``C // 4``, the official choice).
        reduction: int, PAM query/key reduction. Default 8 (C/8).
        dropout: float, Dropout2d rate before each classifier. Default 0.1.
        activation: ``"relu"`` (official) or ``"leaky_relu"``.
        in_levels, output_names, loss_weights: see ``Head``.

    Reference weights: the official ``DANetHead`` state dict (``conv5a.0.weight``,
    ``conv5a.1.*``, ``sa.query_conv.weight``, ``sa.gamma``, ``sc.gamma``, ``conv51``,
    ``conv52``, ``conv6.1``, ``conv7.1``, ``conv8.1``); ``source="mmseg"``: mmseg's
    ``DAHead`` (``MMSEG_RENAMES``; PAM is its ``SelfAttentionBlock`` with plain 1x1
    projections with bias, no scaling, softmax over keys; CAM keeps the max-minus-energy
    form: both identical to ours).

    Example:
    >>> head = DANetHead(5)
    >>> fused, pam, cam = head(keras.ops.ones((1, 9, 7, 64)))
    >>> tuple(fused.shape)
    (1, 9, 7, 5)
    """

    default_output_names = ("logits", "pam", "cam")

    def __init__(self, num_classes, inter_channels=None, reduction=8, dropout=0.1,
                 activation="relu", **kwargs):
        super().__init__(num_classes, inter_channels=inter_channels, reduction=reduction,
                         dropout=dropout, activation=activation, **kwargs)
        self.sa = PositionAttention(reduction=self.reduction, dtype=self.dtype_policy, name="sa")
        self.sc = ChannelAttention(dtype=self.dtype_policy, name="sc")
        self.drop6, self.conv6 = make_classifier(self.num_classes, self.dropout, "conv6")
        self.drop7, self.conv7 = make_classifier(self.num_classes, self.dropout, "conv7")
        self.drop8, self.conv8 = make_classifier(self.num_classes, self.dropout, "conv8")

    def attention_layers(self):
        return self.sa, self.sc

    def classifiers(self):
        return (self.conv6, self.conv7, self.conv8)

    def decode(self, inputs, training=None):
        sa, sc = self.branches(inputs, training)
        fused = apply_classifier(self.drop8, self.conv8, sa + sc, training)
        position = apply_classifier(self.drop6, self.conv6, sa, training)
        channel = apply_classifier(self.drop7, self.conv7, sc, training)
        return fused, position, channel

    def reference_weight_mapping(self, source=None):
        """Official ``DANetHead`` keys, or mmseg ``DAHead`` keys with ``source="mmseg"``."""
        mapping = {}
        for name in ("conv5a", "conv5c", "conv51", "conv52"):
            mapping.update(getattr(self, name).reference_weight_mapping(f"{name}.0", f"{name}.1"))
        mapping.update(convert.prefixed("sa", self.sa.reference_weight_mapping()))
        mapping.update(convert.prefixed("sc", self.sc.reference_weight_mapping()))
        for name in ("conv6", "conv7", "conv8"):
            mapping.update(convert.conv_mapping(f"{name}.1", getattr(self, name)))
        if source == "mmseg":
            check_mmseg_head(self)
            return renamed(mapping, MMSEG_RENAMES)
        return mapping

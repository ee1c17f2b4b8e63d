"""CCNet head (``RCCAModule``): recurrent criss-cross attention + concat bottleneck.

Huang, Wang, Huang, Huang, Wei, Liu, "CCNet: Criss-Cross Attention for Semantic Segmentation",
ICCV 2019 / TPAMI 2020 (arXiv 1811.11721). Reference: speedinghzl/CCNet @ ``1fae6c67``,
``networks/ccnet.py`` ``RCCAModule``.
"""

import keras

from keras_segattn import convert
from keras_segattn.heads.base import Head, check_rank4, renamed
from keras_segattn.heads.fcn_head import check_mmseg_head
from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.layers.criss_cross_attention import CrissCrossAttention

# Official RCCAModule names -> mmseg CCHead names (mmseg/models/decode_heads/cc_head.py).
MMSEG_RENAMES = (
    ("conva.0", "convs.0.conv"), ("conva.1", "convs.0.bn"),
    ("cca.query_conv", "cca.query_conv"), ("cca.key_conv", "cca.key_conv"),
    ("cca.value_conv", "cca.value_conv"), ("cca.gamma", "cca.gamma.scale"),
    ("convb.0", "convs.1.conv"), ("convb.1", "convs.1.bn"),
    ("bottleneck.0", "conv_cat.conv"), ("bottleneck.1", "conv_cat.bn"),
    ("bottleneck.3", "conv_seg"),
)


@keras.saving.register_keras_serializable(package="keras_segattn")
class CCHead(Head):
    """``RCCAModule``: ``conva -> CCA x R (shared weights) -> convb -> bottleneck``.

    With ``inter = C // 4``::

        y = conva(x)                                # 3x3 conv (no bias) -> BN -> act
        for _ in range(recurrence): y = CCA(y)      # ONE CrissCrossAttention, shared weights
        y = convb(y)                                # 3x3 conv -> BN -> act
        z = bottleneck(concat([x, y]))              # 3x3 conv -> channels, BN, act (x FIRST)
        logits = conv1x1(Dropout2d(0.1)(z))         # with bias

    The official head uses InPlaceABNSync, i.e. BN (eps 1e-5) + **leaky-ReLU 0.01**
    (``activation="leaky_relu"``, the default); mmseg's ``CCHead`` uses ReLU.

    Input ``(B, H, W, C)``; output float32 logits ``(B, H, W, num_classes)``.

    Args:
        num_classes: int.
        recurrence: int >= 0, CCA passes. Default 2.
        inter_channels: int or ``None`` (``C // 4``).
        channels: int, bottleneck width. Default 512 (hard-coded upstream).
        dropout: float. Default 0.1.
        activation: ``"leaky_relu"`` (default, InPlaceABN) or ``"relu"`` (mmseg).
        in_levels, output_names, loss_weights: see ``Head``.

    Reference weights: official ``RCCAModule`` keys ``conva.0.weight``, ``conva.1.*``,
    ``cca.*``, ``convb.*``, ``bottleneck.0.weight``, ``bottleneck.1.*``, ``bottleneck.3.*``;
    ``source="mmseg"``: mmseg's ``CCHead`` (``conva -> convs.0``, ``convb -> convs.1``,
    ``bottleneck -> conv_cat``, the classifier ``-> conv_seg``, ``cca.gamma ->
    cca.gamma.scale``; ReLU and ``channels = C // 4`` as in mmseg's configs).

    Example:
    >>> head = CCHead(5, recurrence=2, channels=16)
    >>> tuple(head(keras.ops.ones((1, 7, 9, 32))).shape)
    (1, 7, 9, 5)
    """

    def __init__(self, num_classes, recurrence=2, inter_channels=None, channels=512,
                 dropout=0.1, activation="leaky_relu", **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        if int(recurrence) < 0:
            raise ValueError(f"CCHead: recurrence must be >= 0, got {recurrence!r}.")
        self.recurrence = int(recurrence)
        self.inter_channels = None if inter_channels is None else int(inter_channels)
        self.channels = int(channels)
        self.bottleneck = ConvBNAct(self.channels, kernel_size=3, activation=activation,
                                    dtype=self.dtype_policy, name="bottleneck")
        self._make_classifier("conv_seg")

    def build_head(self, input_shape):
        in_channels = check_rank4("CCHead", input_shape)
        inter = self.inter_channels or in_channels // 4
        if inter < 8:
            raise ValueError(
                f"CCHead: {inter} inter channels (input {in_channels} // 4) are fewer than the "
                "criss-cross reduction 8; use a wider input or set inter_channels."
            )
        block = dict(kernel_size=3, activation=self.activation, dtype=self.dtype_policy)
        self.conva = ConvBNAct(inter, name="conva", **block)
        self.cca = CrissCrossAttention(dtype=self.dtype_policy, name="cca")
        self.convb = ConvBNAct(inter, name="convb", **block)
        shape = tuple(input_shape)
        self.conva.build(shape)
        self.cca.build(shape[:3] + (inter,))
        self.convb.build(shape[:3] + (inter,))
        self.bottleneck.build(shape[:3] + (in_channels + inter,))
        self.conv_seg.build(shape[:3] + (self.channels,))

    def decode(self, inputs, training=None):
        y = self.conva(inputs, training=training)
        for _ in range(self.recurrence):
            y = self.cca(y)
        y = self.convb(y, training=training)
        z = self.bottleneck(keras.ops.concatenate([inputs, y], axis=-1), training=training)
        return self._classify(z, training)

    def reference_weight_mapping(self, source=None):
        """Official ``RCCAModule`` keys, or mmseg ``CCHead`` keys with ``source="mmseg"``."""
        mapping = self.conva.reference_weight_mapping("conva.0", "conva.1")
        mapping.update(convert.prefixed("cca", self.cca.reference_weight_mapping()))
        mapping.update(self.convb.reference_weight_mapping("convb.0", "convb.1"))
        mapping.update(self.bottleneck.reference_weight_mapping("bottleneck.0", "bottleneck.1"))
        mapping.update(convert.conv_mapping("bottleneck.3", self.conv_seg))
        if source == "mmseg":
            check_mmseg_head(self)
            return renamed(mapping, MMSEG_RENAMES)
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({"recurrence": self.recurrence, "inter_channels": self.inter_channels,
                       "channels": self.channels})
        return config

"""EANet head: an FCN-style decode head built around Efficient Attention.

Zhuoran Shen, Mingyuan Zhang, Haiyu Zhao, Shuai Yi, Hongsheng Li, "Efficient Attention:
Attention with Linear Complexities", WACV 2021, arXiv:1812.01243.

Reference module: ``cmsflash/efficient-attention`` @
``46a5f9eaf09470affb0ab30932b7748cc3c871ef``, ``efficient_attention.py``
(``keras_segattn.layers.EfficientAttention``:
``y = reproject(concat_heads(softmax_N(K)^T-context . softmax_C(Q))) + x``).

The paper is **not** a semantic-segmentation paper (detection, instance segmentation and
stereo depth), so there is no reference segmentation head. This model is **our** design, an
mmsegmentation ``FCNHead`` with the attention block inserted between its two convs (the way
mmseg's NLHead / ISAHead wrap their blocks)::

    C5 -> ConvBNReLU 3x3 (512) -> EfficientAttention -> ConvBNReLU 3x3 (512)
       -> concat([C5, .]) -> ConvBNReLU 3x3 (512) -> Dropout2d 0.1 -> 1x1 logits
    C4 -> auxiliary FCNHead (256), loss weight 0.4

Defaults chosen here (UNVERIFIED for segmentation, documented choices): ``key_channels=256``,
``value_channels=512`` and ``num_heads=8`` for a 512-channel input (the key/value widths of
ISANet/OCNet's self-attention blocks; the head count keeps 32 key channels per head).
"""

import keras
from keras import ops

from keras_segattn import layers as sa_layers
from keras_segattn.heads.base import Head, check_rank4
from keras_segattn.layers.conv_bn_act import ConvBNAct


@keras.saving.register_keras_serializable(package="keras_segattn")
class EANetHead(Head):
    """FCN-style head with an Efficient Attention block between its convs.

    ``y = cls(Drop(CBR_3x3(concat([x, CBR_3x3(EA(CBR_3x3(x)))]))))``, ``CBR`` = conv (no
    bias) -> BN(eps 1e-5) -> activation.

    Input ``(B, H, W, C)``; output float32 logits ``(B, H, W, num_classes)``.

    Args:
        num_classes: int.
        channels: int, head width (the EA block's in/out channels). Default 512.
        key_channels: int, EA key/query channels. Default 256.
        value_channels: int, EA value channels. Default 512.
        num_heads: int, EA heads (must divide both). Default 8.
        concat_input: bool, concatenate the head input before the last conv. Default True.
        dropout: float, Dropout2d rate. Default 0.1.
        activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.01).
        in_levels, output_names, loss_weights: see ``Head``.

    Example:
    >>> head = EANetHead(19, channels=16, key_channels=8, value_channels=16, num_heads=2)
    >>> tuple(head(keras.ops.ones((1, 6, 5, 32))).shape)
    (1, 6, 5, 19)
    """

    def __init__(self, num_classes, channels=512, key_channels=256, value_channels=512,
                 num_heads=8, concat_input=True, dropout=0.1, activation="relu", **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        self.channels = int(channels)
        self.key_channels = int(key_channels)
        self.value_channels = int(value_channels)
        self.num_heads = int(num_heads)
        self.concat_input = bool(concat_input)
        block = dict(kernel_size=3, activation=activation, dtype=self.dtype_policy)
        self.conv_in = ConvBNAct(self.channels, name="conv_in", **block)
        self.attention = sa_layers.EfficientAttention(
            key_channels=self.key_channels, value_channels=self.value_channels,
            num_heads=self.num_heads, dtype=self.dtype_policy, name="attention",
        )
        self.conv_out = ConvBNAct(self.channels, name="conv_out", **block)
        self.conv_cat = ConvBNAct(self.channels, name="conv_cat", **block) if self.concat_input else None
        self._make_classifier("conv_seg")

    def build_head(self, input_shape):
        check_rank4("EANetHead", input_shape)
        shape = (input_shape[0], None, None, input_shape[-1])
        inner = shape[:3] + (self.channels,)
        self.conv_in.build(shape)
        self.attention.build(inner)
        self.conv_out.build(inner)
        if self.conv_cat is not None:
            self.conv_cat.build(shape[:3] + (input_shape[-1] + self.channels,))
        self.conv_seg.build(inner)

    def decode(self, inputs, training=None):
        x = self.conv_in(inputs, training=training)
        x = ops.cast(self.attention(x), x.dtype)
        x = self.conv_out(x, training=training)
        if self.conv_cat is not None:
            x = self.conv_cat(ops.concatenate([inputs, x], axis=-1), training=training)
        return self._classify(x, training)

    def get_config(self):
        config = super().get_config()
        config.update({
            "channels": self.channels, "key_channels": self.key_channels,
            "value_channels": self.value_channels, "num_heads": self.num_heads,
            "concat_input": self.concat_input,
        })
        return config

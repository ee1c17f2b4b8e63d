"""Squeeze-and-attention (SANet) module.

Zhong, Lin, Bidart, Hu, Ben Daya, Li, Wong, "Squeeze-and-Attention Networks for Semantic
Segmentation", CVPR 2020, arXiv 1909.03402. No official code exists; the structure follows
the widely copied community ``SqueezeAttentionBlock`` (see ``../shared/docs/mechanisms.md``
section 6).
"""

import keras
from keras import ops

from keras_segattn.layers._checks import positive_int, rank4_channels
from keras_segattn.layers._common import pad_or_crop_spatial, static_size as _size
from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.layers.resize import resize


def average_pool_ceil(x, pool_size):
    """``pool_size`` x ``pool_size`` average pool, stride ``pool_size``, ceil mode.

    Output ``(B, ceil(H / p), ceil(W / p), C)``; border windows average only the pixels
    inside the image, like ``torch.nn.AvgPool2d(p, ceil_mode=True)``.
    """
    p = pool_size
    height, width = _size(x, 1), _size(x, 2)
    qh, qw = (height + p - 1) // p, (width + p - 1) // p
    # Zero-pad at the end to whole windows (gather + mask: works with unknown sizes).
    padded = pad_or_crop_spatial(x, qh * p, qw * p, 0, 0)
    # (B, Qh*p, Qw*p, C) -> (B, Qh, p, Qw, p, C) -> window sums (B, Qh, Qw, C)
    sums = ops.sum(ops.reshape(padded, (-1, qh, p, qw, p, x.shape[-1])), axis=(2, 4))
    rows = ops.minimum(p, height - ops.arange(0, qh, 1, dtype="int32") * p)
    cols = ops.minimum(p, width - ops.arange(0, qw, 1, dtype="int32") * p)
    counts = ops.cast(ops.expand_dims(rows, 1) * ops.expand_dims(cols, 0), x.dtype)
    return sums / ops.reshape(counts, (1, qh, qw, 1))


@keras.saving.register_keras_serializable(package="keras_segattn")
class SqueezeAttention(keras.layers.Layer):
    """SANet squeeze-and-attention module: ``X_out = X_attn * X_res + X_attn``.

    Zhong et al., "Squeeze-and-Attention Networks for Semantic Segmentation", CVPR 2020,
    arXiv 1909.03402. No official code; structure of the community ``SqueezeAttentionBlock``::

        X_res  = F_conv(X_in)                               F = (3x3 conv + bias, BN, ReLU) x 2
        X_attn = Up(sigmoid(F_attn(AvgPool_p(X_in))))       F_attn has the same structure
        X_out  = X_attn * X_res + X_attn

    ``Up`` resizes back to the exact input size (nearest by default, as the community
    ``nn.Upsample(scale_factor=2)``; or bilinear).

    Input ``(B, H, W, C)``; output ``(B, H, W, filters)``.

    Deviation (bug fix): the community block pools with ``AvgPool2d(2)`` (floor) and
    upsamples by x2, which fails for odd ``H``/``W``. Here the pool uses ceil mode (border
    windows average the pixels inside the image) and the attention map is resized to the
    input's exact size with :func:`keras_segattn.layers.resize.resize`. For even sizes this
    is identical to the community block.

    Args:
        filters: int, output channels.
        pool_size: int, squeeze (average-pool) factor. Default 2.
        interpolation: ``"nearest"`` (default) or ``"bilinear"`` for ``Up``.
        use_bias: bool, conv bias (the community block uses it). Default ``True``.
        epsilon: float, BN epsilon. Default 1e-5 (PyTorch).
        momentum: float, BN momentum (Keras meaning). Default 0.9.

    Example:
    >>> layer = SqueezeAttention(4)
    >>> tuple(layer(keras.ops.ones((2, 7, 5, 3))).shape)
    (2, 7, 5, 4)
    """

    def __init__(
        self,
        filters,
        pool_size=2,
        interpolation="nearest",
        use_bias=True,
        epsilon=1e-5,
        momentum=0.9,
        **kwargs,
    ):
        super().__init__(**kwargs)
        positive_int(self, "filters", filters)
        positive_int(self, "pool_size", pool_size)
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(
                f"SqueezeAttention: interpolation must be 'nearest' or 'bilinear', got {interpolation!r}."
            )
        self.filters = filters
        self.pool_size = pool_size
        self.interpolation = interpolation
        self.use_bias = bool(use_bias)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)

        def cbr(name):
            return ConvBNAct(
                filters, 3, use_bias=self.use_bias, epsilon=self.epsilon, momentum=self.momentum,
                dtype=self.dtype_policy, name=name,
            )

        self.res_convs = [cbr("res_conv_0"), cbr("res_conv_1")]
        self.attn_convs = [cbr("attn_conv_0"), cbr("attn_conv_1")]

    def build(self, input_shape):
        rank4_channels(self, input_shape)
        mid_shape = tuple(input_shape[:-1]) + (self.filters,)
        for convs in (self.res_convs, self.attn_convs):
            convs[0].build(input_shape)
            convs[1].build(mid_shape)
        self.built = True

    def call(self, inputs, training=None):
        residual = inputs
        for conv in self.res_convs:
            residual = conv(residual, training=training)
        attention = average_pool_ceil(inputs, self.pool_size)
        for conv in self.attn_convs:
            attention = conv(attention, training=training)
        attention = ops.sigmoid(attention)
        attention = resize(attention, (_size(inputs, 1), _size(inputs, 2)), self.interpolation)
        return attention * residual + attention

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "pool_size": self.pool_size,
                "interpolation": self.interpolation,
                "use_bias": self.use_bias,
                "epsilon": self.epsilon,
                "momentum": self.momentum,
            }
        )
        return config

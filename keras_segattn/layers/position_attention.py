"""DANet position attention module (PAM)."""

import keras
from keras import ops

from keras_segattn import convert


def _input_channels(layer, input_shape):
    """Validate a ``(B, H, W, C)`` input shape and return ``C``."""
    if len(input_shape) != 4:
        raise ValueError(
            f"{type(layer).__name__} expects a 4-D channels-last input (batch, height, width, "
            f"channels); got shape {tuple(input_shape)}. Reshape the feature map to 4-D."
        )
    if input_shape[-1] is None:
        raise ValueError(
            f"{type(layer).__name__} needs a known channel dimension to create its weights; "
            f"got input shape {tuple(input_shape)}. Give the last axis a fixed size."
        )
    return int(input_shape[-1])


@keras.saving.register_keras_serializable(package="keras_segattn")
class PositionAttention(keras.layers.Layer):
    """Position attention module (PAM) of DANet.

    Paper: Jun Fu, Jing Liu, Haijie Tian, Yong Li, Yongjun Bao, Zhiwei Fang, Hanqing Lu,
    "Dual Attention Network for Scene Segmentation", CVPR 2019, arXiv:1809.02983.

    Every position attends to every other position. With ``x`` flattened to ``(N, C)``
    (``N = H*W``, row-major) and 1x1 projections with bias ``Q = x W_q + b_q``,
    ``K = x W_k + b_k`` (``C // reduction`` channels) and ``V = x W_v + b_v`` (``C`` channels):

        E = Q K^T                      (N x N, no 1/sqrt(d) scaling)
        A = softmax(E, axis=keys)
        y = gamma * (A V) + x          (gamma: one learnable scalar, initialised to 0)

    Memory is O(N^2): a 128x128 map needs a 1 GiB float32 energy matrix per image.

    Reference: junfu1115/DANet @ ``b0a0fa008148f102321cdaa7ca38fb0ddd0239d1``,
    ``encoding/nn/da_att.py``, ``PAM_Module``. Weights port 1:1 with
    ``keras_segattn.convert.load_reference_weights`` (keys ``query_conv.weight``, ...,
    ``gamma``). Deviations: none (the paper's BN+ReLU on the projections is not in the
    code, and is not here either). Energies and softmax are computed in float32 under
    mixed precision.

    Input: ``(B, H, W, C)``. Output: ``(B, H, W, C)``; with ``return_attention_scores=True``
    also the attention map ``(B, N, N)`` (query position, key position; float32).

    Args:
        reduction: int, channel reduction of the query/key projections (``C // reduction``
            channels, must be >= 1). Default 8.

    Call arguments:
        inputs: ``(B, H, W, C)`` feature map.
        return_attention_scores: bool. If ``True`` return ``(output, attention)``.

    Example:
    >>> layer = PositionAttention(reduction=8)
    >>> layer(keras.ops.ones((2, 9, 7, 32))).shape
    (2, 9, 7, 32)
    """

    def __init__(self, reduction=8, **kwargs):
        super().__init__(**kwargs)
        if int(reduction) != reduction or reduction < 1:
            raise ValueError(
                f"PositionAttention: reduction must be a positive integer, got {reduction!r}."
            )
        self.reduction = int(reduction)

    def build(self, input_shape):
        channels = _input_channels(self, input_shape)
        key_channels = channels // self.reduction
        if key_channels < 1:
            raise ValueError(
                f"PositionAttention: {channels} input channels // reduction {self.reduction} "
                f"gives {key_channels} query/key channels; use reduction <= {channels} or more "
                "input channels."
            )

        def conv(filters, name):
            layer = keras.layers.Conv2D(
                filters, 1, use_bias=True, dtype=self.dtype_policy, name=name
            )
            layer.build(input_shape)
            return layer

        self.query_conv = conv(key_channels, "query_conv")
        self.key_conv = conv(key_channels, "key_conv")
        self.value_conv = conv(channels, "value_conv")
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")
        self.built = True

    def call(self, inputs, return_attention_scores=False):
        shape = ops.shape(inputs)
        height, width, channels = shape[1], shape[2], shape[3]
        num_positions = height * width

        def flat(projection, filters):
            # (B, H, W, C') -> (B, N, C'), N = H*W in PyTorch's row-major order.
            x = ops.cast(projection(inputs), "float32")
            return ops.reshape(x, (-1, num_positions, filters))

        query = flat(self.query_conv, self.query_conv.filters)
        key = flat(self.key_conv, self.key_conv.filters)
        value = flat(self.value_conv, channels)
        # (B, N, C') @ (B, C', N) -> (B, N, N)
        energy = ops.matmul(query, ops.transpose(key, (0, 2, 1)))
        attention = ops.softmax(energy, axis=-1)
        # (B, N, N) @ (B, N, C) -> (B, N, C) -> (B, H, W, C)
        context = ops.reshape(ops.matmul(attention, value), (-1, height, width, channels))
        gamma = ops.cast(self.gamma, "float32")
        outputs = ops.cast(gamma * context + ops.cast(inputs, "float32"), self.compute_dtype)
        if return_attention_scores:
            return outputs, attention
        return outputs

    def reference_weight_mapping(self):
        """DANet ``PAM_Module`` state-dict keys -> our variables."""
        mapping = {"gamma": (self.gamma, "copy")}
        for name in ("query_conv", "key_conv", "value_conv"):
            mapping.update(convert.conv_mapping(name, getattr(self, name)))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({"reduction": self.reduction})
        return config

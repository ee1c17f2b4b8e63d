"""CCNet criss-cross attention (one pass)."""

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
class CrissCrossAttention(keras.layers.Layer):
    """Criss-cross attention (CCA) of CCNet, one pass.

    Paper: Zilong Huang, Xinggang Wang, Lichao Huang, Chang Huang, Yunchao Wei, Wenyu Liu,
    "CCNet: Criss-Cross Attention for Semantic Segmentation", ICCV 2019 / TPAMI 2020,
    arXiv:1811.11721.

    Each pixel attends to the pixels of its own row and column (H + W - 1 neighbours, itself
    counted once). With 1x1 projections with bias ``Q, K`` (``C // reduction`` channels) and
    ``V`` (``C`` channels), for pixel ``(h, w)``:

        E_col[i] = Q[h, w] . K[i, w]   for i in 0..H-1, set to -inf at i == h
        E_row[j] = Q[h, w] . K[h, j]   for j in 0..W-1 (self kept here)
        A = softmax(concat(E_col, E_row))           (one joint softmax over H + W logits)
        out[h, w] = sum_i A_col[i] V[i, w] + sum_j A_row[j] V[h, j]
        y = gamma * out + x                         (gamma: one scalar, initialised to 0)

    No 1/sqrt(d) scaling. The N x N map is never built: the energies are two einsums,
    ``(B, H, W, C') x (B, H', W, C') -> (B, H, W, H')`` and
    ``(B, H, W, C') x (B, H, W', C') -> (B, H, W, W')``, so memory is O(N (H + W)).
    The self mask uses ``where`` (never ``-inf * eye``, since ``inf * 0`` is NaN). CCNet's
    recurrence (R = 2) is applying this same layer twice (shared weights), e.g.
    ``y = cca(cca(x))``.

    Reference: speedinghzl/CCNet @ ``1fae6c67229c3863232494762b0afd9a8d7ff309`` (master,
    pure PyTorch), ``cc_attention/functions.py``, ``CrissCrossAttention``; equal to mmcv's
    einsum version and to the CUDA H+W-1 formulation. State-dict keys ``query_conv.*``,
    ``key_conv.*``, ``value_conv.*``, ``gamma``. Deviations: none (the reference's
    ``.cuda()`` call in ``INF()`` is irrelevant here). Energies and softmax run in float32
    under mixed precision.

    Input: ``(B, H, W, C)``. Output: ``(B, H, W, C)``; with ``return_attention_scores=True``
    also the attention ``(B, H, W, H + W)`` (float32): entries ``[..., :H]`` are the weights
    of the pixel's column (row index i; 0 at i == h), ``[..., H:]`` those of its row.

    Args:
        reduction: int, channel reduction of the query/key projections (``C // reduction``
            channels, must be >= 1). Default 8.

    Call arguments:
        inputs: ``(B, H, W, C)`` feature map.
        return_attention_scores: bool. If ``True`` return ``(output, attention)``.

    Example:
    >>> layer = CrissCrossAttention(reduction=8)
    >>> layer(keras.ops.ones((2, 10, 7, 32))).shape
    (2, 10, 7, 32)
    """

    def __init__(self, reduction=8, **kwargs):
        super().__init__(**kwargs)
        if int(reduction) != reduction or reduction < 1:
            raise ValueError(
                f"CrissCrossAttention: reduction must be a positive integer, got {reduction!r}."
            )
        self.reduction = int(reduction)

    def build(self, input_shape):
        channels = _input_channels(self, input_shape)
        key_channels = channels // self.reduction
        if key_channels < 1:
            raise ValueError(
                f"CrissCrossAttention: {channels} input channels // reduction {self.reduction} "
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
        height = ops.shape(inputs)[1]
        query = ops.cast(self.query_conv(inputs), "float32")  # (B, H, W, C')
        key = ops.cast(self.key_conv(inputs), "float32")  # (B, H, W, C')
        value = ops.cast(self.value_conv(inputs), "float32")  # (B, H, W, C)

        # Column term: (B, H, W, C') x (B, H', W, C') -> (B, H, W, H')
        energy_col = ops.einsum("bhwc,biwc->bhwi", query, key)
        rows = ops.arange(0, height, 1, dtype="int32")
        # (H, 1, H'): True where the key row is the query's own row.
        is_self = ops.expand_dims(
            ops.equal(ops.expand_dims(rows, 1), ops.expand_dims(rows, 0)), 1
        )
        energy_col = ops.where(is_self, float("-inf"), energy_col)
        # Row term: (B, H, W, C') x (B, H, W', C') -> (B, H, W, W')
        energy_row = ops.einsum("bhwc,bhjc->bhwj", query, key)

        attention = ops.softmax(ops.concatenate([energy_col, energy_row], axis=-1), axis=-1)
        attention_col = attention[..., :height]
        attention_row = attention[..., height:]
        # (B, H, W, H') x (B, H', W, C) -> (B, H, W, C), plus the same along the row.
        context = ops.einsum("bhwi,biwc->bhwc", attention_col, value) + ops.einsum(
            "bhwj,bhjc->bhwc", attention_row, value
        )
        gamma = ops.cast(self.gamma, "float32")
        outputs = ops.cast(gamma * context + ops.cast(inputs, "float32"), self.compute_dtype)
        if return_attention_scores:
            return outputs, attention
        return outputs

    def reference_weight_mapping(self):
        """CCNet ``CrissCrossAttention`` state-dict keys -> our variables."""
        mapping = {"gamma": (self.gamma, "copy")}
        for name in ("query_conv", "key_conv", "value_conv"):
            mapping.update(convert.conv_mapping(name, getattr(self, name)))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({"reduction": self.reduction})
        return config

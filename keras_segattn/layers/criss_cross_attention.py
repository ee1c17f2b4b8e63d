"""CCNet criss-cross attention (one pass)."""

import keras
from keras import ops

from keras_segattn.layers._common import QueryKeyValueAttention, pointwise_conv, release_logits


@keras.saving.register_keras_serializable(package="keras_segattn")
class CrissCrossAttention(QueryKeyValueAttention):
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
    ``.cuda()`` call in ``INF()`` is irrelevant here). Under mixed precision the energies and
    softmax run in float32, the products with the value in the compute dtype.

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
    >>> tuple(layer(keras.ops.ones((2, 10, 7, 32))).shape)
    (2, 10, 7, 32)
    """

    # What keras_segattn.visualize draws for this layer.
    attention_kind = "criss_cross"

    def call(self, inputs, return_attention_scores=False):
        height = ops.shape(inputs)[1]
        query = ops.cast(pointwise_conv(self.query_conv, inputs), "float32")  # (B, H, W, C')
        key = ops.cast(pointwise_conv(self.key_conv, inputs), "float32")  # (B, H, W, C')
        value = pointwise_conv(self.value_conv, inputs)  # (B, H, W, C), compute dtype

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

        attention = release_logits(
            ops.softmax(ops.concatenate([energy_col, energy_row], axis=-1), axis=-1))
        # gamma * (A V) = (gamma A) V: scale the (B, H, W, H + W) map, not the C-channel sum.
        scaled = ops.cast(ops.cast(self.gamma, "float32") * attention, value.dtype)
        attention_col = scaled[..., :height]
        attention_row = scaled[..., height:]
        # (B, H, W, H') x (B, H', W, C) -> (B, H, W, C), plus the same along the row; in the
        # compute dtype (convex weights times gamma: no overflow under float16).
        context = _column_context(attention_col, value) + ops.einsum(
            "bhwj,bhjc->bhwc", attention_row, value
        )
        outputs = ops.cast(ops.cast(context, "float32") + ops.cast(inputs, "float32"),
                           self.compute_dtype)
        if return_attention_scores:
            return outputs, attention
        return outputs


def _column_context(attention_col, value):
    """``sum_i A[b, h, w, i] V[b, i, w, c]``: ``(B, H, W, H')`` and ``(B, H', W, C)`` ->
    ``(B, H, W, C)``, the column term of the context.

    On JAX a batched product over the columns between explicit transposes; XLA:CPU's own
    lowering of the ``einsum``, whose batch axes ``(b, w)`` are not the leading ones, ran
    slower (``jax.jit``, 1 x 97 x 97 x 512: 31.5 ms against 23.0). Elsewhere the ``einsum``.
    """
    if keras.backend.backend() != "jax":
        return ops.einsum("bhwi,biwc->bhwc", attention_col, value)
    # (B, W, H, H') @ (B, W, H', C) -> (B, W, H, C) -> (B, H, W, C)
    context = ops.matmul(ops.transpose(attention_col, (0, 2, 1, 3)),
                         ops.transpose(value, (0, 2, 1, 3)))
    return ops.transpose(context, (0, 2, 1, 3))

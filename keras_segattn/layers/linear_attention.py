"""Linear Attention Mechanism (LAM): first-order Taylor linear position / channel attention."""

import keras
from keras import ops

from keras_segattn.layers._checks import input_channels
from keras_segattn.layers._common import (
    QueryKeyValueAttention,
    outer_product,
    project_weighted_sums,
    sum_over_positions,
    scale_by,
    with_written_out_gradient,
)

# Floor on the squared L2 norm. The reference divides by the bare norm (an all-zero vector
# gives NaN); this floor only changes vectors with norm < 1e-12, i.e. all-zero ones,
# which become 0 instead of NaN. Any other vector is normalised exactly as upstream.
_MIN_SQUARED_NORM = 1e-24


def _check_eps(layer_name, eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"{layer_name}: eps must be a non-negative number, got {eps!r}.")
    return float(eps)


def _sum_of_squares(x):
    """``sum_c x[..., c]^2`` (keepdims), with the gradient ``2 x dy`` on TensorFlow.

    TensorFlow's eager tape keeps the input of a sum for its gradient, here the squares, one
    more map alive from the forward to the backward (LinearChannelAttention's eager
    forward+backward at 64x64x512: 56 MiB against 48); the written-out gradient needs only
    ``x``, which the layer keeps anyway.
    """
    if keras.backend.backend() != "tensorflow":
        return ops.sum(ops.square(x), axis=-1, keepdims=True)

    def sum_of_squares(x):
        def gradient(upstream):
            return 2.0 * x * upstream

        return ops.sum(ops.square(x), axis=-1, keepdims=True), gradient

    return with_written_out_gradient(sum_of_squares)(x)


def _inverse_l2_norm(x):
    """``1 / ||x||_2`` over the last (channel) axis, per position (keepdims)."""
    return ops.rsqrt(ops.maximum(_sum_of_squares(x), _MIN_SQUARED_NORM))


def _l2_normalize_channels(x):
    """``x / ||x||_2`` over the last (channel) axis, per position."""
    return x * _inverse_l2_norm(x)


@keras.saving.register_keras_serializable(package="keras_segattn")
class LinearPositionAttention(QueryKeyValueAttention):
    """Linear position attention of LAM (``PositionLinearAttention``), O(N) memory.

    Paper: Rui Li, Jianlin Su, Chenxi Duan, Shunyi Zheng, "Linear Attention Mechanism: An
    Efficient Attention for Semantic Segmentation", arXiv:2007.14902 (2020).

    Softmax attention ``sum_j exp(q_i.k_j) v_j / sum_j exp(q_i.k_j)`` with ``exp`` replaced
    by its first-order Taylor expansion ``1 + q^_i.k^_j`` on L2-normalised queries/keys.
    With 1x1 projections with bias ``Q, K`` (``C // reduction`` channels), ``V`` (``C``),
    ``q^_i = Q_i / ||Q_i||`` and ``k^_j = K_j / ||K_j||`` (norms over channels, per
    position), exactly as the reference code computes it:

        out[i, c] = (sum_j V[j, c] + sum_m q^_i[m] sum_j k^_j[m] V[j, c])
                    / (N + sum_m q^_i[m] (sum_j k^_j[m] + eps))
        y = x + gamma * out                          (gamma: one scalar, initialised to 0)

    (eps is added to the key-sum vector, not to the denominator.)

    Reference: lironui/Linear-Attention-Mechanism @
    ``bcf978932c685294cfa2d305dac6e26ccdf55205``, ``Linear-Attention-Mechanism.py``,
    ``PositionLinearAttention``; state-dict keys ``query_conv.*``, ``key_conv.*``,
    ``value_conv.*``, ``gamma``.

    Deviations from upstream:
        * Non-square inputs work. Upstream unpacks ``(B, C, width, height) = x.shape`` and
          reshapes the result to ``(B, C, height, width)``, so only H == W works (issue
          lironui/Linear-Attention-Mechanism#2); here H and W are used correctly, which is
          identical for square inputs.
        * The L2 norm has a 1e-24 floor on the squared norm: an all-zero query/key vector
          gives 0 instead of NaN. Every other vector is normalised as upstream.
        * Under mixed precision the attention is computed in float32.

    The values enter only through ``sum_j V_j`` and ``sum_j k^_j V_j^T``, and with
    ``V = X W_v + 1 b^T`` those are ``(sum_j X_j) W_v + N b`` and ``(K^T X) W_v + (K^T 1)
    b^T`` (``K`` the normalised keys): the layer never projects the ``N x C`` values (the
    same maths by associativity, outputs equal up to float rounding). At ``C = 512``,
    ``m = 64`` that removes ``2 N C^2`` of the forward's ``2 N C (C + 3 m)`` multiply-adds,
    about two thirds, and the ``N x C`` value map from the backward. Both sums come from one
    product ``[1, K]^T X`` (a column of ones beside the keys), and the numerator is one
    product ``[1, Q] [sum_j V_j; K^T V]``, so the input receives one ``N x C`` gradient from
    them instead of two (TensorFlow eager forward+backward at 97x97x512: 147 -> 133 MiB, the
    official module 140; 64x64: 64 -> 58, official 61).

    Input: ``(B, H, W, C)``. Output: ``(B, H, W, C)``.

    Args:
        reduction: int, channel reduction of the query/key projections (``C // reduction``
            channels, must be >= 1). Default 8.
        eps: float, added to the key sums in the denominator. Default 1e-6.

    Example:
    >>> layer = LinearPositionAttention(reduction=8)
    >>> tuple(layer(keras.ops.ones((2, 9, 5, 32))).shape)
    (2, 9, 5, 32)
    """

    def __init__(self, reduction=8, eps=1e-6, **kwargs):
        super().__init__(reduction=reduction, **kwargs)
        self.eps = _check_eps("LinearPositionAttention", eps)

    def call(self, inputs):
        shape = ops.shape(inputs)
        height, width, channels = shape[1], shape[2], shape[3]
        num_positions = height * width
        # (B, N, m) in float32
        query = _l2_normalize_channels(self.flat_projection(self.query_conv, inputs))
        key = _l2_normalize_channels(self.flat_projection(self.key_conv, inputs))

        key_sum = ops.sum(key, axis=1)  # (B, m)
        # (B, N, m) . (B, m) -> (B, N)
        denominator = ops.cast(num_positions, "float32") + ops.einsum(
            "bnm,bm->bn", query, key_sum + self.eps
        )
        # The values V = X W_v + 1 b^T enter only through sum_j V_j and K^T V, so the
        # N x C values are never projected (class docstring):
        #   sum_j V_j = (sum_j X_j) W_v + N b,  K^T V = (K^T X) W_v + (K^T 1) b^T
        # Both are the weighted sums of one product, [1, K]^T X (a column of ones beside the
        # keys), and numerator = sum_j V_j + Q (K^T V) = [1, Q] [sum_j V_j; K^T V]: one
        # product each way, and one N x C gradient for the input instead of two.
        flat = ops.reshape(ops.cast(inputs, "float32"), (-1, num_positions, channels))
        ones = ops.ones_like(key[..., :1])  # (B, N, 1)
        # (B, N, 1 + m) x (B, N, C) -> (B, 1 + m, C); the weights' totals N and K^T 1
        input_sums = ops.einsum("bnm,bnc->bmc", ops.concatenate([ones, key], -1), flat)
        position_count = ops.ones_like(key_sum[:, :1]) * ops.cast(num_positions, "float32")
        totals = ops.concatenate([position_count, key_sum], axis=1)  # (B, 1 + m)
        value_sums = project_weighted_sums(self.value_conv, input_sums, totals)  # (B, 1 + m, C)
        # (B, N, 1 + m) x (B, 1 + m, C) -> (B, N, C)
        numerator = ops.einsum("bnm,bmc->bnc", ops.concatenate([ones, query], -1), value_sums)
        # gamma * numerator / denominator, with gamma folded into the (B, N, 1) factor.
        gamma = ops.cast(self.gamma, "float32")
        context = scale_by(numerator, gamma / denominator, broadcast_axis=2)
        context = ops.reshape(context, (-1, height, width, channels))
        return ops.cast(ops.cast(inputs, "float32") + context, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"eps": self.eps})
        return config


@keras.saving.register_keras_serializable(package="keras_segattn")
class LinearChannelAttention(keras.layers.Layer):
    """Linear channel attention of LAM (``ChannelLinearAttention``), no projections.

    Paper: Rui Li, Jianlin Su, Chenxi Duan, Shunyi Zheng, "Linear Attention Mechanism: An
    Efficient Attention for Semantic Segmentation", arXiv:2007.14902 (2020).

    Q = K = V = x as ``(N, C)``. The reference code normalises each *position* vector over
    channels, ``x^_n = x_n / ||x_n||`` (the same axis as the position module), and then
    computes, with ``cos(m, n) = x^_m . x^_n``:

        out[n, c] = (sum_c' x[n, c'] + sum_m x[m, c] cos(m, n))
                    / (N + sum_n' x^[n', c] (sum_c'' x^[n', c''] + eps))
        y = x + gamma * out                          (gamma: one scalar, initialised to 0)

    This is what the code computes, reproduced exactly; it is *not* the channel-wise
    ``(1 + q^_c . k^_c')`` formula of the paper's idea (channel vectors normalised over
    positions). Cost is O(N C^2).

    Reference: lironui/Linear-Attention-Mechanism @
    ``bcf978932c685294cfa2d305dac6e26ccdf55205``, ``Linear-Attention-Mechanism.py``,
    ``ChannelLinearAttention``; state-dict key ``gamma``.

    Deviations from upstream:
        * Non-square inputs work (upstream swaps width/height when reshaping back, so only
          H == W works, issue lironui/Linear-Attention-Mechanism#2); identical for squares.
        * The L2 norm has a 1e-24 floor on the squared norm: an all-zero position vector
          (e.g. after ReLU) gives 0 instead of NaN. Every other vector is as upstream.
        * Under mixed precision the attention is computed in float32.

    Input: ``(B, H, W, C)``. Output: ``(B, H, W, C)``.

    Args:
        eps: float, added to the per-position sums in the denominator. Default 1e-6.

    Example:
    >>> layer = LinearChannelAttention()
    >>> tuple(layer(keras.ops.ones((2, 7, 5, 16))).shape)
    (2, 7, 5, 16)
    """

    def __init__(self, eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.eps = _check_eps("LinearChannelAttention", eps)

    def build(self, input_shape):
        input_channels(self, input_shape, for_weights=False)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")
        self.built = True

    def call(self, inputs):
        shape = ops.shape(inputs)
        height, width, channels = shape[1], shape[2], shape[3]
        num_positions = height * width
        x = ops.cast(inputs, "float32")
        flat = ops.reshape(x, (-1, num_positions, channels))  # (B, N, C)
        inverse_norm = _inverse_l2_norm(flat)  # (B, N, 1)
        normed = flat * inverse_norm  # (B, N, C)
        value_sum = ops.sum(flat, axis=-1, keepdims=True)  # (B, N, 1)

        # sum_c normed[n, c] = value_sum[n] / ||x_n||: no second pass over the map.
        position_sum = ops.squeeze(value_sum * inverse_norm, -1) + self.eps  # (B, N)
        # (B, N, 1) x (B, N, C) -> (B, 1, C) -> (B, C)
        denominator = ops.cast(num_positions, "float32") + ops.squeeze(
            sum_over_positions(ops.expand_dims(position_sum, -1), normed), 1
        )
        # matrix[c', c] = sum_n normed[n, c'] x[n, c]: (B, N, C') x (B, N, C) -> (B, C', C).
        # In this operand order PyTorch hands the transposed (N-major) gradient of the
        # product to ``normed``, and the gradients summed into ``flat`` (five uses) all arrive
        # contiguous. The order "bnc,bnd->bcd" gave ``flat`` the transposed one, and each
        # accumulation into it became a strided copy (forward+backward at 64x64x512 on
        # torch: 88 -> 67 ms; the official module 80 ms). TensorFlow and JAX are unaffected.
        matrix = sum_over_positions(normed, flat)
        # context = gamma * (value_sum + normed @ matrix) / denominator, with the per-channel
        # factor gamma / denominator applied to the C' x C matrix and to value_sum before the
        # products: the backward then keeps no N x C numerator map (jax.jit forward+backward
        # at 97x97x512: 148 -> 130 MiB, the official module's; 64x64: 65 -> 57 MiB), and
        # the time fell too (64x64: jax.jit 80 -> 73 ms, TensorFlow XLA 79 -> 69 ms, torch
        # 61 -> 58 ms).
        gamma = ops.cast(self.gamma, "float32")
        factor = gamma / denominator  # (B, C)
        # (B, N) x (B, C) -> (B, N, C), plus (B, N, C') x (B, C', C) -> (B, N, C)
        context = outer_product(ops.squeeze(value_sum, -1), factor) + ops.einsum(
            "bnd,bdc->bnc", normed, scale_by(matrix, factor, broadcast_axis=1))
        context = ops.reshape(context, (-1, height, width, channels))
        return ops.cast(x + context, self.compute_dtype)

    def reference_weight_mapping(self):
        """LAM ``ChannelLinearAttention`` state-dict keys -> our variables."""
        return {"gamma": (self.gamma, "copy")}

    def get_config(self):
        config = super().get_config()
        config.update({"eps": self.eps})
        return config

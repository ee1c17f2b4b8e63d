"""Efficient attention (linear-complexity attention by associativity)."""

import keras
from keras import ops

from keras_segattn import convert
from keras_segattn.layers._checks import input_channels, positive_integer
from keras_segattn.layers._common import pointwise_conv, project_weighted_sums

_NORMALIZATIONS = ("softmax", "scaling")


@keras.saving.register_keras_serializable(package="keras_segattn")
class EfficientAttention(keras.layers.Layer):
    """Efficient attention: ``rho_q(Q) (rho_k(K)^T V)``, linear in the number of positions.

    Paper: Zhuoran Shen, Mingyuan Zhang, Haiyu Zhao, Shuai Yi, Hongsheng Li, "Efficient
    Attention: Attention with Linear Complexities", WACV 2021, arXiv:1812.01243.

    With 1x1 projections with bias ``K, Q`` (``key_channels``), ``V`` (``value_channels``),
    heads taking contiguous channel slices (head i: key/query channels
    ``[i*dk/h, (i+1)*dk/h)``, value channels ``[i*dv/h, (i+1)*dv/h)``), per head:

        K^ = softmax(K, axis=positions)      (each key channel is a distribution over N)
        Q^ = softmax(Q, axis=head channels)  (per position)
        G  = K^T V                           (dk/h x dv/h global context vectors; with
                                              V = V0 + 1 b^T and columns of K^ summing
                                              to 1 it is computed as K^T V0 + 1 b^T)
        O  = Q^ G                            (N x dv/h)
        y  = reprojection(concat_heads(O)) + x      (1x1 conv dv -> C with bias)

    ``normalization="scaling"`` replaces both softmaxes with a division by sqrt(N); the
    result then equals dot-product attention ``(Q K^T / N) V`` exactly (the paper's
    equivalence). The default ``"softmax"`` is the reference code. No 1/sqrt(d) scaling,
    no gamma, no BN; the reprojection has the default (non-zero) init, so the block is not
    the identity at init. Memory is O(N (dk + dv) + dk dv / h) (O(N (dk + C) + dk C) where
    ``key_channels <= value_channels``).

    Where ``key_channels <= value_channels`` (the reference's configurations) neither the
    values nor the attended map are formed, by associativity (outputs equal up to float
    rounding):

    * ``K^T V = (K^T X) W_v + (K^T 1) b^T``: the layer sums the input under each key channel's
      weights (``dk x C`` per head, ``2 N dk C`` multiply-adds) and projects those sums
      (``2 dk C dv / h``) instead of projecting the ``N x dv`` values (``2 N C dv``) and
      contracting them with the keys (``2 N dk dv / h``);
    * ``reprojection(concat_h(Q^_h G_h)) = sum_h Q^_h (G_h W_r,h) + b_r``: the reprojection is
      folded into the ``dk x dv`` contexts (``2 dk dv C / h``), and the queries multiply the
      folded ``dk x C`` matrix (``2 N dk C``) instead of forming the ``N x dv`` attended map
      (``2 N dk dv / h``) and reprojecting it (``2 N dv C``).

    At ``dk = 64``, ``dv = C = 512`` that is about a fifth of the reference's forward FLOPs
    (``2 N dk C`` four times: the key and query projections, ``K^T X``, ``Q^ (G W_r)``), and no
    ``N x dv`` map is kept for the backward. Forward | forward+backward at 64x64x512 (7 calls,
    alternating), values projected -> sums projected -> reprojection folded too: ``jax.jit``
    30.7 -> 15-17 -> 9-10 | 66-69 -> 41-46 -> 23-26 ms, TensorFlow XLA 25.5 -> 17-19 -> 10-11 |
    71 -> 44-48 -> 24 ms, torch eager 24-26 -> 13-14 -> 7.2-7.3 | 70-71 -> 46-48 -> 24 ms.
    Under mixed precision the two products over ``N`` (``K^T X`` with the soft-maxed keys,
    ``Q^ (G W_r)`` with the soft-maxed queries) run in the compute dtype, as the reprojection
    did; with ``normalization="scaling"`` the weights are not convex and they stay float32.
    With ``key_channels > value_channels`` projecting the values is cheaper, and the layer does
    that (then the reference's order of operations).

    Reference: cmsflash/efficient-attention @ ``46a5f9eaf09470affb0ab30932b7748cc3c871ef``,
    ``efficient_attention.py``, ``EfficientAttention(in_channels, key_channels, head_count,
    value_channels)``; state-dict keys ``keys.*``, ``queries.*``, ``values.*``,
    ``reprojection.*``. Deviations: the ``normalization`` option is an addition (the
    reference is ``"softmax"``). The multi-head split is in the code, not in the paper.
    Softmaxes, the contexts and (but for the two products above) the products run in float32
    under mixed precision.

    Input: ``(B, H, W, C)``. Output: ``(B, H, W, C)``.

    Args:
        key_channels: int, total key/query channels ``dk`` (divisible by ``num_heads``).
        value_channels: int, total value channels ``dv`` (divisible by ``num_heads``).
        num_heads: int, number of heads (the reference's ``head_count``). Default 1.
        normalization: ``"softmax"`` (reference) or ``"scaling"`` (divide Q and K by
            sqrt(N)). Default ``"softmax"``.

    Example:
    >>> layer = EfficientAttention(key_channels=16, value_channels=16, num_heads=2)
    >>> tuple(layer(keras.ops.ones((2, 7, 9, 24))).shape)
    (2, 7, 9, 24)
    """

    def __init__(
        self, key_channels, value_channels, num_heads=1, normalization="softmax", **kwargs
    ):
        super().__init__(**kwargs)
        self.key_channels = positive_integer(self, "key_channels", key_channels)
        self.value_channels = positive_integer(self, "value_channels", value_channels)
        self.num_heads = positive_integer(self, "num_heads", num_heads)
        for name, value in (("key_channels", key_channels), ("value_channels", value_channels)):
            if value % self.num_heads:
                raise ValueError(
                    f"EfficientAttention: num_heads={self.num_heads} must divide {name}={value}; "
                    "pick a num_heads that divides both key_channels and value_channels."
                )
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"EfficientAttention: normalization must be one of {_NORMALIZATIONS}, "
                f"got {normalization!r}."
            )
        self.normalization = normalization

    def build(self, input_shape):
        channels = input_channels(self, input_shape)

        def conv(filters, name, shape):
            layer = keras.layers.Conv2D(
                filters, 1, use_bias=True, dtype=self.dtype_policy, name=name
            )
            layer.build(shape)
            return layer

        self.key_proj = conv(self.key_channels, "keys", input_shape)
        self.query_proj = conv(self.key_channels, "queries", input_shape)
        self.value_proj = conv(self.value_channels, "values", input_shape)
        self.reprojection = conv(
            channels, "reprojection", (*tuple(input_shape)[:-1], self.value_channels)
        )
        self.built = True

    def call(self, inputs):
        shape = ops.shape(inputs)
        height, width = shape[1], shape[2]
        heads = self.num_heads
        head_keys = self.key_channels // heads
        head_values = self.value_channels // heads

        softmax = self.normalization == "softmax"

        def split_heads(projection, head_channels, add_bias=True):
            # (B, H, W, h * d) -> (B, N, h, d); head i = channels [i*d, (i+1)*d).
            x = ops.cast(pointwise_conv(projection, inputs, add_bias), "float32")
            return ops.reshape(x, (-1, height * width, heads, head_channels))

        key = split_heads(self.key_proj, head_keys)
        query = split_heads(self.query_proj, head_keys)
        summarize_inputs = self.key_channels <= self.value_channels
        if not summarize_inputs:
            # With the softmax each key channel is a distribution over the N positions, so
            # K^T (V + 1 b^T) = K^T V + 1 b^T: the value bias is added to the small dk x dv
            # context instead of the N x dv values (one pass over N x dv less).
            value = split_heads(self.value_proj, head_values, add_bias=not softmax)
        if softmax:
            key = ops.softmax(key, axis=1)  # over positions, per key channel
            query = ops.softmax(query, axis=-1)  # over the head's channels, per position
        else:
            scale = ops.rsqrt(ops.cast(height * width, "float32"))
            key = key * scale
            query = query * scale
        if summarize_inputs:
            return self._attend_through_sums(inputs, key, query, softmax) + inputs
        # (B, N, h, dk) x (B, N, h, dv) -> (B, h, dk, dv)
        context = ops.einsum("bnhk,bnhv->bhkv", key, value)
        if softmax:
            bias = ops.cast(self.value_proj.bias, "float32")
            context = context + ops.reshape(bias, (1, heads, 1, head_values))
        # (B, h, dk, dv) x (B, N, h, dk) -> (B, N, h, dv) -> (B, H, W, h * dv)
        attended = ops.einsum("bhkv,bnhk->bnhv", context, query)
        attended = ops.reshape(attended, (-1, height, width, self.value_channels))
        return pointwise_conv(self.reprojection, attended) + inputs

    def _attend_through_sums(self, inputs, key, query, softmax):
        """``reprojection(Q^ (K^T V))`` for ``key_channels <= value_channels``, with neither
        the ``N x dv`` values nor the ``N x dv`` attended map formed (class docstring).

        ``key``, ``query``: normalised, float32 ``(B, N, h, dk / h)``. Returns ``(B, H, W, C)``
        in the compute dtype, without the residual.
        """
        shape = ops.shape(inputs)
        height, width, channels = shape[1], shape[2], inputs.shape[-1]
        heads = self.num_heads
        # The two products over N take soft-maxed (convex) weights in the compute dtype, as
        # the reprojection they replace did; the scaled weights are unbounded: float32.
        dtype = self.compute_dtype if softmax else "float32"
        flat_inputs = ops.reshape(ops.cast(inputs, dtype), (-1, height * width, channels))
        # K^T V = K^T (X W_v + 1 b^T) = (K^T X) W_v + (K^T 1) b^T: the keys' weighted sums of
        # the input, (B, N, h, dk) x (B, N, C) -> (B, h, dk, C), then their value projection
        # (B, h, dk, dv); the softmax keys sum to 1 over the positions, the scaled ones to
        # their own sums.
        summary = ops.einsum("bnhk,bnc->bhkc", ops.cast(key, dtype), flat_inputs)
        totals = None if softmax else ops.sum(key, axis=1)  # (B, h, dk)
        context = project_weighted_sums(
            self.value_proj, ops.cast(summary, "float32"), totals, heads=heads
        )
        # reprojection(concat_h(Q^_h G_h)) = sum_h Q^_h (G_h W_r,h) + b_r: the reprojection
        # folded into the context, (B, h, dk, dv) x (h, dv, C) -> (B, h dk, C).
        reprojection = ops.reshape(
            ops.cast(self.reprojection.kernel, "float32"),
            (heads, self.value_channels // heads, channels),
        )
        folded = ops.einsum("bhkv,hvc->bhkc", context, reprojection)
        folded = ops.reshape(folded, (-1, self.key_channels, channels))
        # (B, N, h dk) @ (B, h dk, C) -> (B, N, C)
        query = ops.reshape(ops.cast(query, dtype), (-1, height * width, self.key_channels))
        output = ops.cast(ops.matmul(query, ops.cast(folded, dtype)), self.compute_dtype)
        # ops.add: a BiasAdd on TensorFlow, whose gradient keeps no N x C product
        output = ops.add(output, ops.cast(self.reprojection.bias, self.compute_dtype))
        return ops.reshape(output, (-1, height, width, channels))

    def reference_weight_mapping(self):
        """cmsflash ``EfficientAttention`` state-dict keys -> our variables."""
        mapping = {}
        for key, conv in (
            ("keys", self.key_proj),
            ("queries", self.query_proj),
            ("values", self.value_proj),
            ("reprojection", self.reprojection),
        ):
            mapping.update(convert.conv_mapping(key, conv))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "key_channels": self.key_channels,
                "value_channels": self.value_channels,
                "num_heads": self.num_heads,
                "normalization": self.normalization,
            }
        )
        return config

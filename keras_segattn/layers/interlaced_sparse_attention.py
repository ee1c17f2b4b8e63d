"""Interlaced Sparse Self-Attention (ISANet / ISSA).

Huang, Yuan, Guo, Zhang, Chen, Wang, "Interlaced Sparse Self-Attention for Semantic
Segmentation", arXiv 1907.12273 (also in the IJCV OCNet paper).

Reference implementation: openseg-group/openseg.pytorch @
``aefc75517b09068d7131a69420bc5f66cb41f0ee``, ``lib/models/modules/isa_block.py``
(``SelfAttentionBlock2D``, ``ISA_Block``).
"""

import keras
from keras import ops

from keras_segattn import convert
from keras_segattn.layers._checks import positive_int, rank4_channels
from keras_segattn.layers._common import pad_or_crop_spatial, pointwise_conv
from keras_segattn.layers._common import with_written_out_gradient
from keras_segattn.layers._common import softmax_attention, static_size as _size
from keras_segattn.layers.conv_bn_act import ConvBNAct

_ACTIVATIONS = ("relu", "leaky_relu")


def _validate_activation(name, activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"{name}: activation must be one of {_ACTIVATIONS} ('relu' matches openseg "
            f"bn_type='torchbn', 'leaky_relu' the official inplace_abn training), got {activation!r}."
        )


@keras.saving.register_keras_serializable(package="keras_segattn")
class ISASelfAttention(keras.layers.Layer):
    """Dense self-attention over all positions of each map (openseg ``SelfAttentionBlock2D``).

    The sub-block that :class:`InterlacedSparseAttention` applies to its long-range and
    short-range groups; usable on its own as a plain (non-residual) self-attention block.

    Formula (N = h*w positions of one map, d = ``key_channels``)::

        q = f_query(x), k = f_key(x)      f = [1x1 conv (no bias), BN, act] x 2
        v = f_value(x)                    1x1 conv, no norm (bias only with value_bias)
        A = softmax_keys(d^-0.5 * q k^T)  (N, N), float32
        y = W(A v)                        W = 1x1 conv (no bias), BN, act

    There is no residual inside (as upstream).

    Input ``(B, h, w, C)``; output ``(B, h, w, output_channels)``.

    Args:
        key_channels: int, query/key channels (d).
        value_channels: int, value channels.
        output_channels: int, output channels of ``W``.
        activation: ``"relu"`` (default, openseg ``bn_type="torchbn"``) or
            ``"leaky_relu"`` (slope 0.01, InPlaceABN as in the official training).
        epsilon: float, BN epsilon. Default 1e-5 (PyTorch).
        momentum: float, BN momentum (Keras meaning). Default 0.9.
        value_bias: bool, give ``f_value`` a bias. False (default): openseg; True:
            mmsegmentation's ``SelfAttentionBlock`` (its ``value_project`` is a plain
            ``nn.Conv2d`` with bias, ``value_out_norm=False``).

    Reference weights: openseg keys (``f_query.0.weight``, ``f_query.1.0.*``, ...,
    ``f_value.weight``, ``W.0.weight``, ``W.1.0.*``), or with ``source="mmseg"`` mmseg's
    ``SelfAttentionBlock`` of ``ISAHead`` (``query_project.{0,1}.conv/bn``,
    ``key_project.{0,1}.conv/bn``, ``value_project.{weight,bias}``,
    ``output_project.conv/bn``).

    Example:
    >>> block = ISASelfAttention(4, 6, 3)
    >>> tuple(block(keras.ops.ones((2, 3, 5, 4))).shape)
    (2, 3, 5, 3)
    """

    def __init__(
        self,
        key_channels,
        value_channels,
        output_channels,
        activation="relu",
        epsilon=1e-5,
        momentum=0.9,
        value_bias=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validate_activation(type(self).__name__, activation)
        positive_int(self, "key_channels", key_channels)
        positive_int(self, "value_channels", value_channels)
        positive_int(self, "output_channels", output_channels)
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.output_channels = output_channels
        self.activation = activation
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.value_bias = bool(value_bias)

        def cba(filters, name):
            return ConvBNAct(
                filters, 1, activation=activation, negative_slope=0.01, epsilon=self.epsilon,
                momentum=self.momentum, dtype=self.dtype_policy, name=name,
            )

        self.query_convs = [cba(key_channels, "f_query_0"), cba(key_channels, "f_query_1")]
        self.key_convs = [cba(key_channels, "f_key_0"), cba(key_channels, "f_key_1")]
        self.value_conv = keras.layers.Conv2D(
            value_channels, 1, use_bias=self.value_bias, dtype=self.dtype_policy, name="f_value"
        )
        self.out_conv = cba(output_channels, "W")

    def build(self, input_shape):
        rank4_channels(self, input_shape)
        key_shape = tuple(input_shape[:-1]) + (self.key_channels,)
        for convs in (self.query_convs, self.key_convs):
            convs[0].build(input_shape)
            convs[1].build(key_shape)
        self.value_conv.build(input_shape)
        self.out_conv.build(tuple(input_shape[:-1]) + (self.value_channels,))
        self.built = True

    def call(self, inputs, training=None):
        query = key = inputs
        for conv in self.query_convs:
            query = conv(query, training=training)
        for conv in self.key_convs:
            key = conv(key, training=training)
        value = pointwise_conv(self.value_conv, inputs)
        height, width = _size(inputs, 1), _size(inputs, 2)
        # (B, h, w, d) -> (B, N, d), row-major positions like torch's view(B, C, -1).
        query = ops.reshape(ops.cast(query, "float32"), (-1, height * width, self.key_channels))
        key = ops.reshape(ops.cast(key, "float32"), (-1, height * width, self.key_channels))
        value = ops.reshape(value, (-1, height * width, self.value_channels))
        # softmax(d^-0.5 Q K^T) V: (B, N, N) energies scaled by d^-0.5 and soft-maxed over
        # keys in float32, the product with V in its dtype. The scale goes on the energies,
        # as upstream: a group's N x N energies are smaller than its N x d query at the usual
        # sizes (N = 64 short-range, ~100-500 long-range, d = 256), and a scaled query would
        # be one more N x d tensor kept for the backward.
        context = softmax_attention(query, key, value, scale=self.key_channels ** -0.5,
                                    blockwise=not training)
        # (B, N, C_v) -> (B, h, w, C_v)
        context = ops.reshape(context, (-1, height, width, self.value_channels))
        # Eager inference frees the projections before the output conv (the attention map
        # does not outlive softmax_attention; training keeps what the backward needs).
        del query, key, value
        return self.out_conv(context, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_channels,)

    def reference_weight_mapping(self, source=None):
        """openseg ``SelfAttentionBlock2D`` state-dict keys -> our variables; with
        ``source="mmseg"``, the keys of mmseg's ``SelfAttentionBlock`` in ``ISAHead``."""
        mapping = {}
        if source == "mmseg":
            for name, convs in (("query_project", self.query_convs),
                                ("key_project", self.key_convs)):
                for i, conv in enumerate(convs):
                    mapping.update(conv.reference_weight_mapping(f"{name}.{i}.conv",
                                                                 f"{name}.{i}.bn"))
            mapping.update(convert.conv_mapping("value_project", self.value_conv))
            mapping.update(self.out_conv.reference_weight_mapping("output_project.conv",
                                                                  "output_project.bn"))
            return mapping
        for name, convs in (("f_query", self.query_convs), ("f_key", self.key_convs)):
            mapping.update(convs[0].reference_weight_mapping(f"{name}.0", f"{name}.1.0"))
            mapping.update(convs[1].reference_weight_mapping(f"{name}.2", f"{name}.3.0"))
        mapping.update(convert.conv_mapping("f_value", self.value_conv))
        mapping.update(self.out_conv.reference_weight_mapping("W.0", "W.1.0"))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "key_channels": self.key_channels,
                "value_channels": self.value_channels,
                "output_channels": self.output_channels,
                "activation": self.activation,
                "epsilon": self.epsilon,
                "momentum": self.momentum,
                "value_bias": self.value_bias,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_segattn")
class InterlacedSparseAttention(keras.layers.Layer):
    """Interlaced sparse self-attention: long-range then short-range grouped attention.

    Huang et al., "Interlaced Sparse Self-Attention for Semantic Segmentation",
    arXiv 1907.12273. Reference: openseg-group/openseg.pytorch @ ``aefc7551``,
    ``lib/models/modules/isa_block.py``, ``ISA_Block``.

    With ``down_factor = (P_h, P_w)`` (the *local block size*), ``Q_h = ceil(H / P_h)``,
    ``Q_w = ceil(W / P_w)``:

    1. zero-pad to ``(Q_h P_h, Q_w P_w)``: top ``= pad_h // 2``, bottom the rest (left/right
       likewise). Padded zeros are not masked: they act as keys and queries, as upstream.
    2. write ``h = a P_h + p``, ``w = b P_w + q``. Long-range: for each ``(p, q)`` apply
       :class:`ISASelfAttention` to the ``Q_h x Q_w`` map of pixels ``(a P_h + p, b P_w + q)``
       (pixels ``P`` apart over the whole image).
    3. short-range: for each ``(a, b)`` apply a second :class:`ISASelfAttention` to the
       contiguous ``P_h x P_w`` block.
    4. crop the padding.

    Each step is dense attention within a group; the grouping is done only by reshape and
    transpose (no gathers of attention maps), so memory is
    ``O(B (H W) (Q_h Q_w + P_h P_w))`` instead of ``O(B (H W)^2)``.
    Works for any size, including maps smaller than ``down_factor`` and unknown sizes.

    Input ``(B, H, W, C)``; output ``(B, H, W, output_channels)`` (default ``C``).

    Deviations: none in the maths. ``activation="relu"`` is the openseg ``torchbn`` path
    (the golden vectors); the official training used InPlaceABN (``"leaky_relu"``, 0.01).

    Args:
        key_channels: int, query/key channels of both sub-blocks (paper 256).
        value_channels: int, value channels (paper 512).
        output_channels: int or ``None`` (input channels).
        down_factor: ``(P_h, P_w)`` local block size. Default ``(8, 8)``.
        activation: ``"relu"`` or ``"leaky_relu"``.
        epsilon: float, BN epsilon. Default 1e-5.
        momentum: float, BN momentum (Keras meaning). Default 0.9.
        value_bias: bool, value projections with a bias (mmsegmentation's ``ISAHead``;
            openseg has none). Default False.

    mmsegmentation's ``ISAHead`` (``mmseg/models/decode_heads/isa_head.py``) computes the
    same two stages (``global_relation`` = long range, ``local_relation`` = short range,
    same padding and grouping) with ``value_bias=True``;
    ``reference_weight_mapping(source="mmseg")`` gives its keys.

    Example:
    >>> layer = InterlacedSparseAttention(8, 12, down_factor=(4, 4))
    >>> tuple(layer(keras.ops.ones((2, 10, 9, 16))).shape)
    (2, 10, 9, 16)
    """

    def __init__(
        self,
        key_channels,
        value_channels,
        output_channels=None,
        down_factor=(8, 8),
        activation="relu",
        epsilon=1e-5,
        momentum=0.9,
        value_bias=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validate_activation(type(self).__name__, activation)
        if isinstance(down_factor, int):
            down_factor = (down_factor, down_factor)
        down_factor = tuple(down_factor)
        if len(down_factor) != 2 or not all(
            isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in down_factor
        ):
            raise ValueError(
                f"InterlacedSparseAttention: down_factor must be two positive ints (P_h, P_w), "
                f"got {down_factor!r}."
            )
        positive_int(self, "output_channels", output_channels, allow_none=True)
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.output_channels = output_channels
        self.down_factor = down_factor
        self.activation = activation
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.value_bias = bool(value_bias)
        self.long_range = None
        self.short_range = None

    def build(self, input_shape):
        channels = rank4_channels(self, input_shape)
        out = self.output_channels or channels
        kwargs = dict(
            key_channels=self.key_channels, value_channels=self.value_channels, output_channels=out,
            activation=self.activation, epsilon=self.epsilon, momentum=self.momentum,
            value_bias=self.value_bias, dtype=self.dtype_policy,
        )
        self.long_range = ISASelfAttention(name="long_range_sa", **kwargs)
        self.short_range = ISASelfAttention(name="short_range_sa", **kwargs)
        self.long_range.build((None, None, None, channels))
        self.short_range.build((None, None, None, out))
        self.built = True

    def call(self, inputs, training=None):
        height, width = _size(inputs, 1), _size(inputs, 2)
        # Long range: batch B*Ph*Pw of Qh x Qw maps (pixels P apart).
        x = to_groups(inputs, self.down_factor, long_range=True)
        x = self.long_range(x, training=training)
        # Short range: batch B*Qh*Qw of contiguous Ph x Pw blocks.
        x = _long_to_short_range(x, height, width, self.down_factor)
        x = self.short_range(x, training=training)
        return from_groups(x, height, width, self.down_factor, long_range=False)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_channels or input_shape[-1],)

    def reference_weight_mapping(self, source=None):
        """openseg ``ISA_Block`` state-dict keys (``long_range_sa.*``, ``short_range_sa.*``);
        ``source="mmseg"``: mmseg ``ISAHead``'s ``global_relation.*``, ``local_relation.*``."""
        long_name, short_name = (("global_relation", "local_relation") if source == "mmseg"
                                 else ("long_range_sa", "short_range_sa"))
        mapping = convert.prefixed(long_name, self.long_range.reference_weight_mapping(source))
        mapping.update(convert.prefixed(short_name,
                                        self.short_range.reference_weight_mapping(source)))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "key_channels": self.key_channels,
                "value_channels": self.value_channels,
                "output_channels": self.output_channels,
                "down_factor": list(self.down_factor),
                "activation": self.activation,
                "epsilon": self.epsilon,
                "momentum": self.momentum,
                "value_bias": self.value_bias,
            }
        )
        return config


def _padded_grid(height, width, down_factor):
    """``(Q_h, Q_w, top, left)``: the blocks per side and the padding before the map."""
    ph, pw = down_factor
    qh, qw = (height + ph - 1) // ph, (width + pw - 1) // pw
    return qh, qw, (qh * ph - height) // 2, (qw * pw - width) // 2


def _group_order(long_range):
    """The transpose from ``(B, Q_h, P_h, Q_w, P_w, C)`` to the grouped order."""
    # long range (B, Ph, Pw, Qh, Qw, C): one group per offset (p, q) in the blocks;
    # short range (B, Qh, Qw, Ph, Pw, C): one group per block (a, b)
    return (0, 2, 4, 1, 3, 5) if long_range else (0, 1, 3, 2, 4, 5)


def _to_groups(x, down_factor, long_range):
    ph, pw = down_factor
    height, width, channels = _size(x, 1), _size(x, 2), x.shape[-1]
    qh, qw, top, left = _padded_grid(height, width, down_factor)
    x = pad_or_crop_spatial(x, qh * ph, qw * pw, top, left)
    x = ops.transpose(ops.reshape(x, (-1, qh, ph, qw, pw, channels)), _group_order(long_range))
    # Through (M, C) first: with a batch of 1 the 4-D regrouping is a strided view on torch,
    # which each of the three projections' matmuls would copy again (three saved copies in
    # training); the 2-D reshape copies it once.
    group_shape = (qh, qw) if long_range else (ph, pw)
    return ops.reshape(ops.reshape(x, (-1, channels)), (-1, *group_shape, channels))


def _from_groups(groups, height, width, down_factor, long_range):
    ph, pw = down_factor
    channels = groups.shape[-1]
    qh, qw, top, left = _padded_grid(height, width, down_factor)
    shape = (-1, ph, pw, qh, qw, channels) if long_range else (-1, qh, qw, ph, pw, channels)
    inverse = [_group_order(long_range).index(axis) for axis in range(6)]
    x = ops.transpose(ops.reshape(groups, shape), inverse)
    x = ops.reshape(x, (-1, qh * ph, qw * pw, channels))
    return pad_or_crop_spatial(x, height, width, -top, -left)


def to_groups(x, down_factor, long_range):
    """ISA's grouping of a ``(B, H, W, C)`` map: zero-padded to ``(Q_h P_h, Q_w P_w)``
    (``pad // 2`` before, the rest after), then with ``long_range`` ``(B P_h P_w, Q_h, Q_w,
    C)`` (the pixels ``(a P_h + p, b P_w + q)`` of each offset ``(p, q)``), else ``(B Q_h Q_w,
    P_h, P_w, C)`` (each contiguous block ``(a, b)``). ``from_groups`` is its inverse.

    Both are linear maps, each the other's adjoint (padding's adjoint is the crop, a
    regrouping's the inverse regrouping), and on TensorFlow each takes the other as its
    gradient: TensorFlow's eager tape kept the padded map under the reshape into groups,
    and the regrouped output under the crop, until the backward (ISA's forward+backward at
    97x97x512: one 104x104x512 map, 21 MiB). Other backends keep nothing for these
    operations and differentiate them as they are.
    """
    if keras.backend.backend() != "tensorflow":
        return _to_groups(x, down_factor, long_range)
    height, width = _size(x, 1), _size(x, 2)

    def forward(x):
        def gradient(upstream):
            return _from_groups(upstream, height, width, down_factor, long_range)

        return _to_groups(x, down_factor, long_range), gradient

    return with_written_out_gradient(forward)(x)


def from_groups(groups, height, width, down_factor, long_range):
    """The ``(B, H, W, C)`` map of ``to_groups``' groups, the padding cropped."""
    if keras.backend.backend() != "tensorflow":
        return _from_groups(groups, height, width, down_factor, long_range)

    def forward(groups):
        def gradient(upstream):
            return _to_groups(upstream, down_factor, long_range)

        return _from_groups(groups, height, width, down_factor, long_range), gradient

    return with_written_out_gradient(forward)(groups)


def _long_to_short_range(groups, height, width, down_factor):
    """The long-range groups regrouped as short-range groups, without the full map."""
    ph, pw = down_factor
    channels = groups.shape[-1]
    qh, qw, _, _ = _padded_grid(height, width, down_factor)
    # (B, Ph, Pw, Qh, Qw, O) -> (B, Qh, Qw, Ph, Pw, O), through (M, O) as in _to_groups
    x = ops.transpose(ops.reshape(groups, (-1, ph, pw, qh, qw, channels)), (0, 3, 4, 1, 2, 5))
    return ops.reshape(ops.reshape(x, (-1, channels)), (-1, ph, pw, channels))

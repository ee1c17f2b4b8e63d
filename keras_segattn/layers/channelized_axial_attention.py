"""Channelized axial attention (CAA).

Huang, Kang, Jia, He, Liu, "Channelized Axial Attention - Considering Channel Relation
within Spatial Attention for Semantic Segmentation", AAAI 2022, arXiv 2101.07434.
Reference: edwardyehuang/CAR @ ``97c90d431ee2e633db407f956704c202d4abf919``,
``heads/caa.py`` (``AxialAttentionBlock``), with helpers from edwardyehuang/iSeg @
``0b4a72ed12e4de569f03b1f69ff26f54b7721787`` (``utils/attention_utils.py``,
``layers/model_builder.py``).
"""

import keras
from keras import ops

from keras_segattn.layers._checks import positive_int, rank4_channels
from keras_segattn.layers._common import release_logits, static_size as _size
from keras_segattn.layers.conv_bn_act import ConvBNAct


def join_scope(*parts):
    """Join Keras name-scope parts with ``/``, skipping empty ones."""
    return "/".join(part for part in parts if part)


def keras_conv_bn_mapping(block, scope):
    """Keras variable names of an iSeg ``ConvBnRelu`` (``ConvNormAct``) -> a ``ConvBNAct``.

    iSeg's ``ConvBnRelu(name=n)`` is a Keras model named ``n`` holding a ``Conv2D`` named
    ``n_conv`` and a BatchNormalization named ``n_bn``, so under the Keras name scope
    ``scope`` (ending in ``n``) its variables are ``{scope}/n_conv/kernel:0`` (plus
    ``bias:0`` with a conv bias) and ``{scope}/n_bn/{gamma, beta, moving_mean,
    moving_variance}:0``. Layout ``"copy"`` (Keras HWIO kernels).
    """
    name = scope.rsplit("/", 1)[-1]
    mapping = {join_scope(scope, f"{name}_conv", "kernel:0"): (block.conv.kernel, "copy")}
    if block.conv.use_bias:
        mapping[join_scope(scope, f"{name}_conv", "bias:0")] = (block.conv.bias, "copy")
    norm = block.norm
    if norm is not None:
        for variable in ("gamma", "beta", "moving_mean", "moving_variance"):
            attr = getattr(norm, variable, None)
            if attr is not None:  # no gamma/beta without scale/center
                mapping[join_scope(scope, f"{name}_bn", f"{variable}:0")] = (attr, "copy")
    return mapping


def _axial_attention(query, value, group_size):
    """``softmax_j(q_i . q_j) v_j`` along axis 2 of ``(B, A, L, K)`` / ``(B, A, L, F)``.

    ``query`` is float32 (shared query = key). With ``group_size`` the ``L`` query positions
    are processed ``group_size`` at a time in a sequential ``ops.map``, so the energies held
    at once are ``(B, A, group_size, L)`` instead of ``(B, A, L, L)``. The query axis is
    padded to a multiple of ``group_size`` by repeating the last query (the extra rows are
    dropped), so any ``L >= 1`` works, including ``L < group_size`` and unknown ``L``.
    """
    keys_t = ops.transpose(query, (0, 1, 3, 2))  # (B, A, K, L)

    def attend(q):
        # (B, A, g, K) @ (B, A, K, L) -> (B, A, g, L), softmax over keys in float32.
        attention = release_logits(ops.softmax(ops.matmul(q, keys_t), axis=-1))
        # (B, A, g, L) @ (B, A, L, F) -> (B, A, g, F)
        return ops.matmul(ops.cast(attention, value.dtype), value)

    length = _size(query, 2)
    if group_size is None or (isinstance(length, int) and length <= group_size):
        return attend(query)
    groups = (length + group_size - 1) // group_size
    index = ops.minimum(ops.arange(0, groups * group_size, 1, dtype="int32"), length - 1)
    other = _size(query, 1)
    channels = query.shape[-1]
    # (B, A, n*g, K) -> (B, A, n, g, K) -> (n, B, A, g, K)
    q = ops.reshape(ops.take(query, index, axis=2), (-1, other, groups, group_size, channels))
    out = ops.map(attend, ops.transpose(q, (2, 0, 1, 3, 4)))  # (n, B, A, g, F)
    out = ops.reshape(ops.transpose(out, (1, 2, 0, 3, 4)), (-1, other, groups * group_size, value.shape[-1]))
    return ops.take(out, ops.arange(0, length, 1, dtype="int32"), axis=2)  # drop the padding


@keras.saving.register_keras_serializable(package="keras_segattn")
class ChannelizedAxialAttention(keras.layers.Layer):
    """CAA ``AxialAttentionBlock``: axial attention with per-row/column sigmoid channel gates.

    Huang et al., "Channelized Axial Attention", AAAI 2022, arXiv 2101.07434. Reference:
    edwardyehuang/CAR @ ``97c90d43``, ``heads/caa.py`` (+ iSeg @ ``0b4a72ed``).

    For ``x`` of shape ``(B, H, W, C)``, ``q_v = CBR_v(x)``, ``q_h = CBR_h(x)`` (1x1 conv, BN,
    ReLU to ``key_channels``; shared query = key), ``V = CBR_value(x)`` (to ``filters``)::

        A_v[w, i, j] = softmax_j(q_v[i, w] . q_v[j, w])          (column attention)
        R_v[i, w]   = sum_j A_v[w, i, j] V[j, w]
        s_v[i]      = sigmoid(MLP_v(mean_{j, w} A_v[w, i, j] V[j, w])) = sigmoid(MLP_v(mean_w R_v[i, w] / H))
        Y_v[i, w]   = s_v[i] * R_v[i, w]
        A_h[h, i, j] = softmax_j(q_h[h, i] . q_h[h, j])          (row attention, from x too)
        R_h[h, i]   = sum_j A_h[h, i, j] Y_v[h, j]
        s_h[i]      = sigmoid(MLP_h(mean_h R_h[h, i] / W))
        Y[h, i]     = s_h[i] * R_h[h, i]

    ``MLP``: ``gate_layers`` x [Dense(int(filters * gate_ratio), no bias), leaky ReLU 0.2],
    then Dense(filters, no bias). No scaling, no masking, no residual. Energies and softmax
    in float32.

    Input ``(B, H, W, C)``; output ``(B, H, W, filters)``.

    Memory: upstream materialises, per query row, the weighted map ``A_v[:, i, :] V``
    of size ``(B, H, W, F)`` (``O(B H^2 W F)`` in one step at group size ``H``) and groups
    query rows with ``group_size = L // 16``. The mean of that map equals ``mean_w R_v / H``,
    so here only the axial energies are needed; they are computed ``query_group_size``
    query rows/columns at a time (``ops.map`` over groups): peak extra memory
    ``O(B W g H + B H g W)`` floats, independent of ``F``. The arithmetic is identical.

    Deviations (bug fixes): upstream ``group_size = L // 16`` is 0 for axes shorter than
    16 in training mode (crash); here the group size is a fixed number of query positions
    and the last group is padded, so every size works. The CAA-repo version passes
    ``channel_attention_norm`` as the MLP activation; as in the CAR version, the hidden
    activation is leaky ReLU (0.2).

    Args:
        filters: int, value/output channels (paper 512).
        key_channels: int, shared query/key channels per axis. Default 64.
        gate_layers: int, hidden Dense layers of the gate MLP. Default 5.
        gate_ratio: float, hidden units = ``int(filters * gate_ratio)``. Default 0.25.
        query_group_size: int or ``None``. Query rows/columns per step; ``None`` computes
            all at once (fastest, ``O(B H W (H + W))`` energies). Default 16.
        use_channel_attention: bool, apply the sigmoid channel gates. Default ``True``.
        epsilon: float, BN epsilon. Default 1e-3 (iSeg/Keras).
        momentum: float, BN momentum. Default 0.9997 (CAR training configs).

    Example:
    >>> layer = ChannelizedAxialAttention(16, key_channels=8)
    >>> tuple(layer(keras.ops.ones((2, 9, 7, 16))).shape)
    (2, 9, 7, 16)
    """

    def __init__(
        self,
        filters,
        key_channels=64,
        gate_layers=5,
        gate_ratio=0.25,
        query_group_size=16,
        use_channel_attention=True,
        epsilon=1e-3,
        momentum=0.9997,
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = type(self).__name__
        positive_int(self, "filters", filters)
        positive_int(self, "key_channels", key_channels)
        positive_int(self, "gate_layers", gate_layers, minimum=0)
        positive_int(self, "query_group_size", query_group_size, allow_none=True)
        hidden = int(filters * gate_ratio)
        if use_channel_attention and gate_layers > 0 and hidden < 1:
            raise ValueError(
                f"{name}: int(filters * gate_ratio) = {hidden} hidden units; increase gate_ratio "
                f"(got {gate_ratio!r}) or filters."
            )
        self.filters = filters
        self.key_channels = key_channels
        self.gate_layers = gate_layers
        self.gate_ratio = float(gate_ratio)
        self.query_group_size = query_group_size
        self.use_channel_attention = bool(use_channel_attention)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)

        def cbr(units, layer_name):
            return ConvBNAct(
                units, 1, activation="relu", epsilon=self.epsilon, momentum=self.momentum,
                dtype=self.dtype_policy, name=layer_name,
            )

        self.v_querykey_conv = cbr(key_channels, "v_querykey_conv")
        self.h_querykey_conv = cbr(key_channels, "h_querykey_conv")
        self.value_conv = cbr(filters, "value_conv")
        self.gates = {}
        if self.use_channel_attention:
            for axis in ("v", "h"):
                layers = [
                    keras.layers.Dense(hidden, use_bias=False, dtype=self.dtype_policy, name=f"{axis}_dense{i}")
                    for i in range(gate_layers)
                ]
                layers.append(
                    keras.layers.Dense(filters, use_bias=False, dtype=self.dtype_policy, name=f"{axis}_dense_end")
                )
                self.gates[axis] = layers

    def build(self, input_shape):
        rank4_channels(self, input_shape)
        for conv in (self.v_querykey_conv, self.h_querykey_conv, self.value_conv):
            conv.build(input_shape)
        for layers in self.gates.values():
            units = self.filters
            for dense in layers:
                dense.build((None, None, units))
                units = dense.units
        self.built = True

    def _gate(self, axis, aggregated, length):
        """``sigmoid(MLP(mean over (key, other axis)))`` from ``R`` of shape ``(B, A, L, F)``."""
        if not self.use_channel_attention:
            return aggregated
        # mean_{j, other} A V = (1 / L) * mean over the other axis of R: (B, L, F)
        gate = ops.mean(ops.cast(aggregated, "float32"), axis=1) / ops.cast(length, "float32")
        gate = ops.cast(gate, self.compute_dtype)
        layers = self.gates[axis]
        for dense in layers[:-1]:
            gate = ops.leaky_relu(dense(gate), negative_slope=0.2)
        gate = ops.sigmoid(layers[-1](gate))
        return aggregated * ops.expand_dims(gate, 1)

    def call(self, inputs, training=None):
        height, width = _size(inputs, 1), _size(inputs, 2)
        query_v = ops.cast(self.v_querykey_conv(inputs, training=training), "float32")
        query_h = ops.cast(self.h_querykey_conv(inputs, training=training), "float32")
        value = self.value_conv(inputs, training=training)
        # Vertical pass over columns: (B, H, W, .) -> (B, W, H, .)
        result = _axial_attention(
            ops.transpose(query_v, (0, 2, 1, 3)), ops.transpose(value, (0, 2, 1, 3)), self.query_group_size
        )
        result = ops.transpose(self._gate("v", result, height), (0, 2, 1, 3))  # (B, H, W, F)
        # Horizontal pass over rows on the vertical result, attention from the input.
        result = _axial_attention(query_h, result, self.query_group_size)
        return self._gate("h", result, width)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def reference_weight_mapping(self, prefix="caa_block"):
        """Keras variable names of the upstream TF block (``caa_block/...:0``) -> ours.

        ``prefix`` is the block's Keras name scope (``"caa_block"`` in CAR's head, i.e. the
        names of a top-level block as in golden case ``caa_axial``; a head passes its own
        scope, e.g. ``"<head>/caa_block"``). The reference is itself Keras (NHWC, HWIO
        kernels), so every layout is ``"copy"``.
        """
        mapping = {}
        for name, block in (
            ("v_querykey_conv", self.v_querykey_conv),
            ("h_querykey_conv", self.h_querykey_conv),
            ("value_conv", self.value_conv),
        ):
            mapping.update(keras_conv_bn_mapping(block, join_scope(prefix, name)))
        for axis, layers in self.gates.items():
            for i, dense in enumerate(layers):
                dense_name = "dense_end" if i == len(layers) - 1 else f"dense{i}"
                key = join_scope(prefix, f"{axis}_c_attention", dense_name, "kernel:0")
                mapping[key] = (dense.kernel, "copy")
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "key_channels": self.key_channels,
                "gate_layers": self.gate_layers,
                "gate_ratio": self.gate_ratio,
                "query_group_size": self.query_group_size,
                "use_channel_attention": self.use_channel_attention,
                "epsilon": self.epsilon,
                "momentum": self.momentum,
            }
        )
        return config

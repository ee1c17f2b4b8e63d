"""Fully attentional block (FLANet).

Song, Li, Li, Guo, Huang, "Fully Attentional Network for Semantic Segmentation", AAAI 2022,
arXiv 2112.04108. Reference: maggiesong7/FullyAttentional @
``52af4fdf210df0503fab936b35a3508cb5198811``, ``model.py``, ``FullyAttentionalBlock``.
"""

import keras
from keras import ops

from keras_segattn import convert
from keras_segattn.layers._checks import rank4_channels
from keras_segattn.layers._common import release_logits, softmax_attention
from keras_segattn.layers.conv_bn_act import ConvBNAct


@keras.saving.register_keras_serializable(package="keras_segattn")
class FullyAttentional(keras.layers.Layer):
    """FLANet ``FullyAttentionalBlock``: channel attention per row and per column.

    Song et al., "Fully Attentional Network for Semantic Segmentation", AAAI 2022,
    arXiv 2112.04108. Reference: maggiesong7/FullyAttentional @ ``52af4fdf``, ``model.py``.

    For ``x`` of shape ``(B, H, W, C)`` (per sample ``b``)::

        P_h[h] = Linear_1(mean_w x[h, w, :])          (H, C)  row descriptors
        P_w[w] = Linear_2(mean_h x[h, w, :])          (W, C)  column descriptors
        column w:  A_w = softmax_c'(sum_h x[h, w, c] P_h[h, c'])       (C, C)
                   O1[h, w, c] = sum_c' A_w[c, c'] x[h, w, c']
        row h:     A_h = softmax_c'(sum_w x[h, w, c] P_w[w, c'])       (C, C)
                   O2[h, w, c] = sum_c' A_h[c, c'] x[h, w, c']
        y = ReLU(BN(Conv3x3_noBias(gamma (O1 + O2) + x)))

    No scaling; energies and softmax in float32; ``gamma`` is a float32 ``(1,)`` variable
    initialised to zero (as upstream). Memory ``O(B (H + W) C^2)``.

    Input ``(B, H, W, C)``; output ``(B, H, W, C)``.

    Deviation (bug fix): upstream tiles the descriptors with ``.repeat`` over the whole
    batch while the features are flattened sample-major, so for batch > 1 the rows/columns
    of sample ``b`` are paired with *another sample's* descriptors. Here every sample uses
    its own descriptors (exactly the upstream result for batch 1, the golden case).
    ``SyncBatchNorm`` is a plain ``BatchNormalization`` (eps 1e-5).

    Args:
        epsilon: float, BN epsilon. Default 1e-5 (PyTorch).
        momentum: float, BN momentum (Keras meaning). Default 0.9.

    Example:
    >>> layer = FullyAttentional()
    >>> tuple(layer(keras.ops.ones((2, 9, 7, 16))).shape)
    (2, 9, 7, 16)
    """

    def __init__(self, epsilon=1e-5, momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.channels = None

    def build(self, input_shape):
        self.channels = rank4_channels(self, input_shape)
        self.row_dense = keras.layers.Dense(self.channels, dtype=self.dtype_policy, name="conv1")
        self.col_dense = keras.layers.Dense(self.channels, dtype=self.dtype_policy, name="conv2")
        self.row_dense.build((None, None, self.channels))
        self.col_dense.build((None, None, self.channels))
        self.out_conv = ConvBNAct(
            self.channels, 3, activation="relu", epsilon=self.epsilon, momentum=self.momentum,
            dtype=self.dtype_policy, name="conv",
        )
        self.out_conv.build(input_shape)
        self.gamma = self.add_weight(
            name="gamma", shape=(1,), initializer="zeros", dtype="float32"
        )
        self.built = True

    def call(self, inputs, training=None):
        row_desc = self.row_dense(ops.mean(inputs, axis=2))  # (B, H, C)
        col_desc = self.col_dense(ops.mean(inputs, axis=1))  # (B, W, C)
        x32 = ops.cast(inputs, "float32")
        row_desc = ops.cast(row_desc, "float32")
        col_desc = ops.cast(col_desc, "float32")
        # The energies and softmax in float32, the products with the softmax'ed (convex)
        # weights in the compute dtype (no overflow under float16).
        dtype = self.compute_dtype
        on_jax = keras.backend.backend() == "jax"
        x_cols = ops.transpose(x32, (0, 2, 3, 1))  # (B, W, C, H)
        # Column branch: (B, W, C, H) @ (B, 1, H, C') -> (B, W, C, C'), softmax over C'.
        out_cols = self._attend(x_cols, row_desc, dtype, on_jax)
        out_cols = ops.transpose(ops.cast(out_cols, "float32"), (0, 3, 1, 2))
        x_rows = ops.transpose(x32, (0, 1, 3, 2))  # (B, H, C, W)
        # Row branch: (B, H, C, W) @ (B, 1, W, C') -> (B, H, C, C'), softmax over C'.
        out_rows = self._attend(x_rows, col_desc, dtype, on_jax)
        out_rows = ops.transpose(ops.cast(out_rows, "float32"), (0, 1, 3, 2))
        fused = self.gamma * (out_cols + out_rows) + x32
        return self.out_conv(ops.cast(fused, self.compute_dtype), training=training)

    @staticmethod
    def _attend(lines, descriptors, dtype, through_softmax_attention):
        """``softmax(lines @ descriptors, axis=C') @ lines``: ``lines`` ``(B, L, C, S)`` float32
        (``L`` lines of ``S`` positions), ``descriptors`` ``(B, S, C')``; ``(B, L, C, S)`` in
        ``dtype``.

        ``through_softmax_attention`` (the layer sets it on JAX): as ``softmax_attention`` with
        queries and values ``lines`` and the descriptors as keys, broadcast over the lines. Its
        written-out gradient takes ``rowsum(A * dA)`` from the ``C x S`` output instead of the
        ``C x C'`` maps, whose multiply-and-sum XLA:CPU runs as a slow YNNPACK fusion with the
        ``dA`` product (``jax.jit`` forward+backward at 64x64x512: 831 -> 735 ms, 97x97:
        1680 -> 1519 ms; buffer assignment 324 -> 294 / 547 -> 562 MiB, the official module
        400 / 650). Elsewhere the plain expression (TensorFlow's and PyTorch's soft-max
        gradients keep only ``A``).
        """
        if through_softmax_attention:
            batch, num_lines, channels, size = ops.shape(lines)
            query = ops.reshape(lines, (-1, channels, size))
            key = ops.broadcast_to(ops.expand_dims(ops.transpose(descriptors, (0, 2, 1)), 1),
                                   (batch, num_lines, channels, size))
            key = ops.reshape(key, (-1, channels, size))
            out = softmax_attention(query, key, ops.cast(query, dtype))
            return ops.reshape(out, (batch, num_lines, channels, size))
        # (B, L, C, S) @ (B, 1, S, C') -> (B, L, C, C'), softmax over C'
        energy = ops.matmul(lines, ops.expand_dims(descriptors, 1))
        attention = release_logits(ops.softmax(energy, axis=-1))
        del energy
        # (B, L, C, C') @ (B, L, C', S) -> (B, L, C, S)
        return ops.matmul(ops.cast(attention, dtype), ops.cast(lines, dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def reference_weight_mapping(self):
        """Upstream ``FullyAttentionalBlock`` state-dict keys -> our variables."""
        mapping = {"gamma": (self.gamma, "copy")}
        mapping.update(convert.linear_mapping("conv1", self.row_dense))
        mapping.update(convert.linear_mapping("conv2", self.col_dense))
        mapping.update(self.out_conv.reference_weight_mapping("conv.0", "conv.1"))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "momentum": self.momentum})
        return config

"""Fully attentional block (FLANet).

Song, Li, Li, Guo, Huang, "Fully Attentional Network for Semantic Segmentation", AAAI 2022,
arXiv 2112.04108. Reference: maggiesong7/FullyAttentional @
``52af4fdf210df0503fab936b35a3508cb5198811``, ``model.py``, ``FullyAttentionalBlock``.
"""

import keras
from keras import ops

from keras_segattn import convert
from keras_segattn.layers._checks import rank4_channels
from keras_segattn.layers._common import softmax_keeping_output
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
        x_cols = ops.transpose(x32, (0, 2, 3, 1))  # (B, W, C, H)
        # Column branch: (B, W, C, H) @ (B, 1, H, C') -> (B, W, C, C'), softmax over C'.
        att_cols = softmax_keeping_output(ops.matmul(x_cols, ops.expand_dims(row_desc, 1)))
        # (B, W, C, C') @ (B, W, C', H) -> (B, W, C, H) -> (B, H, W, C)
        out_cols = ops.matmul(ops.cast(att_cols, dtype), ops.cast(x_cols, dtype))
        out_cols = ops.transpose(ops.cast(out_cols, "float32"), (0, 3, 1, 2))
        x_rows = ops.transpose(x32, (0, 1, 3, 2))  # (B, H, C, W)
        # Row branch: (B, H, C, W) @ (B, 1, W, C') -> (B, H, C, C'), softmax over C'.
        att_rows = softmax_keeping_output(ops.matmul(x_rows, ops.expand_dims(col_desc, 1)))
        # (B, H, C, C') @ (B, H, C', W) -> (B, H, C, W) -> (B, H, W, C)
        out_rows = ops.matmul(ops.cast(att_rows, dtype), ops.cast(x_rows, dtype))
        out_rows = ops.transpose(ops.cast(out_rows, "float32"), (0, 1, 3, 2))
        fused = self.gamma * (out_cols + out_rows) + x32
        return self.out_conv(ops.cast(fused, self.compute_dtype), training=training)

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

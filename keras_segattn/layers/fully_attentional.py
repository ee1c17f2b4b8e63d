"""Fully attentional block (FLANet).

Song, Li, Li, Guo, Huang, "Fully Attentional Network for Semantic Segmentation", AAAI 2022,
arXiv 2112.04108. Reference: maggiesong7/FullyAttentional @
``52af4fdf210df0503fab936b35a3508cb5198811``, ``model.py``, ``FullyAttentionalBlock``.
"""

import keras
from keras import ops

from keras_segattn import convert
from keras_segattn.layers._checks import rank4_channels
from keras_segattn.layers._common import (
    release_logits,
    static_size,
    with_written_out_gradient,
)
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
    initialised to zero (as upstream). Memory ``O(B (H + W) C^2)``. Each branch runs the
    same maths in the form that is fastest and smallest on the backend (``_attend_function``):
    on JAX ``_attend_lines_per_sample``, in eager TensorFlow ``_attend_lines_written_out``,
    in a TensorFlow graph (``model.fit``, XLA) ``_attend_lines_flat_gradient``, on PyTorch
    ``_attend_lines``.

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
        attend = _attend_function()
        # Column branch: the W columns (B, W, C, H) with the row descriptors -> (B, W, H, C)
        out_cols = attend(ops.transpose(x32, (0, 2, 3, 1)), row_desc, dtype)
        out_cols = ops.transpose(ops.cast(out_cols, "float32"), (0, 2, 1, 3))
        # Row branch: the H rows (B, H, C, W) with the column descriptors -> (B, H, W, C)
        out_rows = attend(ops.transpose(x32, (0, 1, 3, 2)), col_desc, dtype)
        fused = self.gamma * (out_cols + ops.cast(out_rows, "float32")) + x32
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


def _attend_function():
    """The form of a branch that each backend runs fastest and in the least memory.

    - JAX: ``_attend_lines_per_sample``. XLA:CPU fuses the soft-max into the energies'
      product when that product is one 2-D matrix product (a sample's ``(L C, S) @ (S, C')``)
      and the soft-max is taken on its 2-D result, not when the product is batched (over the
      samples, even one) or the soft-max taken after a reshape. One branch under
      ``jax.jit``, 512 channels, median of 5 on the 2-core CPU (forward | forward+backward
      ms): batch 1 at 64x64 53 | 175 against 109 | 269 for ``_attend_lines_written_out``
      (PyTorch's official branch 77 | 180), at 97x97 124 | 387 against 164 | 436 (130 |
      336); batch 2 at 64x64 119 | 350 against 275 | 528. The whole layer's compiled
      forward+backward holds 363 MiB of XLA buffers at 64x64x512 and 609 at 97x97 (the
      official module 393 / 641), because the gradient's ``dE`` takes the 2-D attention's
      shape and XLA writes it over the attention (415 / 682 MiB when it did not).
    - Eager TensorFlow: ``_attend_lines_written_out``. TensorFlow's eager
      ``GradientTape`` differentiates the plain expression op by op and reached the soft-max
      gradients of both branches with both branches' ``dA`` alive, and each soft-max gradient
      holds two more ``C x C'`` maps per line: forward+backward at 64x64x512 peaked at 441
      MiB (official module 393), 337 MiB written out; 701 against 562 at 97x97.
    - A TensorFlow graph (``tf.function``, XLA; how ``model.fit`` runs):
      ``_attend_lines_flat_gradient``. XLA compiled the plain expression's backward with the
      soft-max gradient ``dE`` written twice per branch (once for each product that reads
      it, in two shapes) and both branches' maps alive at once: 445 MiB at 64x64x512
      forward+backward, 707 at 97x97 (official 393 / 641); with the flattened products
      388 / 634 MiB and faster (548-589 against 619-658 ms at 64x64, 1242-1296 against
      1365-1380 ms at 97x97, separate runs on the 2-core CPU).
      ``_attend_lines_written_out`` under XLA: 444 MiB and 883 ms at 64x64.
    - PyTorch: ``_attend_lines``, differentiated by autograd (305 MiB at 64x64, 330 for the
      flattened form; both below the official module's 393).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return _attend_lines_per_sample
    if backend == "tensorflow":
        import tensorflow as tf

        return _attend_lines_written_out if tf.executing_eagerly() else _attend_lines_flat_gradient
    return _attend_lines


def _attend_lines(lines, descriptors, dtype):
    """``transpose(softmax(lines @ descriptors, axis=C') @ lines)``: ``lines`` ``(B, L, C, S)``
    float32 (``L`` lines of ``S`` positions), ``descriptors`` ``(B, S, C')`` float32; returns
    ``(B, L, S, C)`` in ``dtype`` (each line's positions, channels last).

    The plain expression, differentiated by the backend (TensorFlow's and PyTorch's soft-max
    gradients keep only ``A``)."""
    # (B, L, C, S) @ (B, 1, S, C') -> (B, L, C, C'), softmax over C'
    energy = ops.matmul(lines, ops.expand_dims(descriptors, 1))
    attention = release_logits(ops.softmax(energy, axis=-1))
    del energy
    # (B, L, C, C') @ (B, L, C', S) -> (B, L, C, S)
    context = ops.matmul(ops.cast(attention, dtype), ops.cast(lines, dtype))
    return ops.transpose(context, (0, 1, 3, 2))


def _attend_lines_per_sample(lines, descriptors, dtype):
    """``_attend_lines_flat_gradient`` one sample at a time (JAX; see ``_attend_function``):
    each sample's energies are then one 2-D product ``(L C, S) @ (S, C')`` with the soft-max
    on its 2-D result, and the gradient's products over the lines are 2-D too.

    ``lines`` ``(B, L, C, S)``, ``descriptors`` ``(B, S, C')`` float32; returns
    ``(B, L, S, C)`` in ``dtype``.
    """
    return ops.stack([_attend_lines_flat_gradient(lines[b], descriptors[b], dtype)
                      for b in range(static_size(lines, 0))])


def _attend_lines_written_out(lines, descriptors, dtype):
    """``_attend_lines`` with a written-out gradient (eager TensorFlow), the context
    computed directly in the ``(B, L, S, C)`` layout.

    With ``A = softmax(E)``, ``E = X P`` per line (``X`` the line ``(C, S)``, ``P`` the
    descriptors ``(S, C')``) and the output ``O = (A X)^T`` ``(S, C)``::

        dA = dO^T X^T,  rowsum(A * dA)_c = sum_s dO[s, c] O[s, c],
        dE = A * (dA - rowsum(A * dA)),
        dX = dE P^T + A^T dO^T,  dP = sum over the lines of X^T dE

    The row sums come from the ``S x C`` output rather than the ``C x C'`` maps (a
    multiply-and-sum of two ``C x C'`` maps is a slow YNNPACK fusion under XLA:CPU), and the
    descriptors' gradient contracts lines and channels in one product. (The layout was
    chosen for JAX, which now takes ``_attend_lines_per_sample``: XLA:CPU ran ``E``, the
    soft-max and ``A X`` as one YNNPACK fusion, and with the context written ``(C, S)`` that
    fusion took 187 ms at 97x97x512 against 106 ms with the context written ``(S, C)``.)
    The row branch's output is then the layer's layout without a transpose.
    ``tests/layers/test_fully_attentional.py`` checks the values against float64 NumPy and
    the gradients against the backend's gradient of ``_attend_lines``.
    """

    def attend(lines, descriptors):
        # (B, L, C, S) (B, S, C') -> (B, L, C, C'), softmax over C'
        attention = release_logits(
            ops.softmax(ops.einsum("blcs,bsd->blcd", lines, descriptors), axis=-1))
        values = ops.cast(lines, dtype)
        # (B, L, C, C') (B, L, C', S) -> (B, L, S, C)
        context = ops.einsum("blcd,blds->blsc", ops.cast(attention, dtype), values)

        def gradient(upstream):
            # through the values: (B, L, C, C') (B, L, S, C) -> (B, L, C', S)
            d_lines = ops.cast(
                ops.einsum("blcd,blsc->blds", ops.cast(attention, dtype), upstream), "float32")
            # dA: (B, L, S, C) (B, L, C', S) -> (B, L, C, C')
            d_energy = ops.cast(ops.einsum("blsc,blds->blcd", upstream, values), "float32")
            row_sums = ops.sum(ops.cast(upstream, "float32") * ops.cast(context, "float32"),
                               axis=2)  # (B, L, C)
            # Two statements, so that eager mode frees dA before the product: two C x C' maps
            # per line at once instead of three.
            d_energy = d_energy - ops.expand_dims(row_sums, -1)
            d_energy = attention * d_energy
            # through the energies: (B, L, C, C') (B, S, C') -> (B, L, C, S)
            d_lines = d_lines + ops.einsum("blcd,bsd->blcs", d_energy, descriptors)
            # (B, L, C, C') (B, L, C, S) -> (B, S, C')
            d_descriptors = ops.einsum("blcd,blcs->bsd", d_energy, lines)
            return d_lines, d_descriptors

        return context, gradient

    return with_written_out_gradient(attend)(lines, descriptors)


def _attend_lines_flat_gradient(lines, descriptors, dtype):
    """``_attend_lines`` with a written-out gradient whose energy products take all lines'
    rows at once (TensorFlow graphs on the batch, JAX on each sample; see
    ``_attend_function``).

    With ``A = softmax(E)``, ``E = X P`` per line (``X`` the line ``(C, S)``, ``P`` the
    descriptors ``(S, C')``) and the context ``Z = A X`` ``(C, S)``::

        dA = dZ X^T,  rowsum(A * dA)_c = sum_s dZ[c, s] Z[c, s],  dE = A * (dA - rowsum),
        dX = A^T dZ + dE P^T,  dP = sum over the lines of X^T dE

    ``E``, ``dE P^T`` and ``dP`` are products of the ``(L C, S)`` / ``(L C, C')`` matrices
    of all lines stacked (``P`` is shared by the lines), and ``A`` is kept in that stacked
    shape: ``dE`` is then one ``(..., L C, C')`` tensor read by both of its products, with
    ``A``'s shape, and XLA writes it over ``A``'s buffer (with ``A`` reshaped to
    ``(L, C, C')`` there, XLA fused the reshape into ``dE``'s fusion and gave ``dE`` a buffer
    of its own: one more ``C x C'`` map per line alive). The row sums come from the
    ``(S, C)`` output rather than the ``(C, S)`` context before its transpose: XLA then
    keeps one line-sized buffer fewer for the backward.

    ``lines`` ``(..., L, C, S)``, ``descriptors`` ``(..., S, C')`` float32 with the same
    leading axes (the batch, or none); returns ``(..., L, S, C)`` in ``dtype``.
    ``tests/layers/test_fully_attentional.py`` checks the values against float64 NumPy and
    the gradients against the backend's gradient of ``_attend_lines``.
    """

    def attend(lines, descriptors):
        rank = len(lines.shape)
        *leading, num_lines, channels, positions = (
            static_size(lines, axis) for axis in range(rank))
        reduced = static_size(descriptors, rank - 2)
        # (..., L C, S) @ (..., S, C') -> (..., L C, C'), softmax over C'
        stacked = ops.reshape(lines, (*leading, num_lines * channels, positions))
        attention = release_logits(ops.softmax(ops.matmul(stacked, descriptors), axis=-1))
        lines_attention = ops.cast(
            ops.reshape(attention, (*leading, num_lines, channels, reduced)), dtype)
        values = ops.cast(lines, dtype)
        # (..., L, C, C') @ (..., L, C', S) -> (..., L, C, S) -> (..., L, S, C)
        output = ops.swapaxes(ops.matmul(lines_attention, values), -1, -2)

        def gradient(upstream):
            d_context = ops.swapaxes(upstream, -1, -2)  # (..., L, C, S)
            # through the values: (..., L, C', C) @ (..., L, C, S) -> (..., L, C', S)
            d_lines = ops.cast(ops.matmul(ops.swapaxes(lines_attention, -1, -2),
                                          ops.cast(d_context, dtype)), "float32")
            # dA: (..., L, C, S) @ (..., L, S, C') -> (..., L, C, C')
            d_energy = ops.cast(ops.matmul(ops.cast(d_context, dtype),
                                           ops.swapaxes(values, -1, -2)), "float32")
            row_sums = ops.sum(ops.cast(upstream, "float32") * ops.cast(output, "float32"),
                               axis=-2)  # (..., L, C)
            d_energy = attention * (
                ops.reshape(d_energy, (*leading, num_lines * channels, reduced))
                - ops.reshape(row_sums, (*leading, num_lines * channels, 1)))
            # through the energies: (..., L C, C') @ (..., C', S) -> (..., L, C, S)
            d_lines = d_lines + ops.reshape(
                ops.matmul(d_energy, ops.swapaxes(descriptors, -1, -2)),
                (*leading, num_lines, channels, positions))
            # (..., S, L C) @ (..., L C, C') -> (..., S, C')
            d_descriptors = ops.matmul(ops.swapaxes(stacked, -1, -2), d_energy)
            return d_lines, d_descriptors

        return output, gradient

    return with_written_out_gradient(attend)(lines, descriptors)

"""DANet channel attention module (CAM)."""

import keras
from keras import ops

from keras_segattn.layers._checks import input_channels
from keras_segattn.layers._common import gram_matrix, release_logits

_SMALLEST_NORMAL = 1.1754944e-38  # float32


@keras.saving.register_keras_serializable(package="keras_segattn")
class ChannelAttention(keras.layers.Layer):
    """Channel attention module (CAM) of DANet.

    Paper: Jun Fu, Jing Liu, Haijie Tian, Yong Li, Yongjun Bao, Zhiwei Fang, Hanqing Lu,
    "Dual Attention Network for Scene Segmentation", CVPR 2019, arXiv:1809.02983.

    Channels attend to channels, with no projections. With ``X`` the input as ``(C, N)``
    (``N = H*W``):

        E = X X^T                                   (C x C, summed over all positions)
        A = softmax_j(max_j' E[i, j'] - E[i, j])    (= softmax(-E): dissimilar channels win)
        y = gamma * (A X) + x                       (gamma: one scalar, initialised to 0)

    The ``max - E`` form is the reference code's (not in the paper; the authors adopted it
    "to prevent loss divergence"); since softmax is shift invariant it equals softmax(-E).
    It is kept literally.

    Reference: junfu1115/DANet @ ``b0a0fa008148f102321cdaa7ca38fb0ddd0239d1``,
    ``encoding/nn/da_att.py``, ``CAM_Module`` (state-dict key ``gamma``). Deviations:
    none in the maths. ``gamma A`` is flushed to zero below float32's smallest normal number
    (1.18e-38) before the product with ``X``: ``softmax(-E)`` over energies that differ by
    thousands leaves most entries 0 and a few percent subnormal, and a CPU multiplying
    subnormal operands without flush-to-zero (PyTorch's default; TensorFlow and XLA flush)
    takes a slow path for each: the product ran 8-20x slower on an Intel Xeon (measured in
    ``benchmarks/RESULTS.md``). The change to any output is below 1e-37. The flush acts on
    the forward value only: the gradient is that of ``gamma A`` itself (a plain ``where``
    would stop it at every flushed entry, and at ``gamma = 0``, the initial value, at every
    entry, so that ``gamma`` could never leave zero). The C x C energies grow with H*W, so
    they and the softmax are computed in float32 under mixed precision (float16 would
    overflow on large maps); the product ``A X`` runs in the compute dtype.

    Input: ``(B, H, W, C)``. Output: ``(B, H, W, C)``; with ``return_attention_scores=True``
    also the channel attention ``(B, C, C)`` (float32).

    Call arguments:
        inputs: ``(B, H, W, C)`` feature map.
        return_attention_scores: bool. If ``True`` return ``(output, attention)``.

    Example:
    >>> layer = ChannelAttention()
    >>> tuple(layer(keras.ops.ones((2, 7, 9, 16))).shape)
    (2, 7, 9, 16)
    """

    # What keras_segattn.visualize draws for this layer.
    attention_kind = "channel"

    def build(self, input_shape):
        input_channels(self, input_shape, for_weights=False)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")
        self.built = True

    def call(self, inputs, return_attention_scores=False):
        shape = ops.shape(inputs)
        height, width, channels = shape[1], shape[2], shape[3]
        x = ops.cast(inputs, "float32")
        # (B, H, W, C) -> (B, N, C)
        flat = ops.reshape(x, (-1, height * width, channels))
        # (B, N, C) -> (B, C, C): E = X X^T from its distinct blocks (3/4 of the products from
        # 256 channels on), with one C x N product in its gradient.
        energy = gram_matrix(flat)
        # softmax is shift invariant, so the gradient through the row max is exactly zero:
        # stop it rather than back-propagate through the max (an arg-max mask on torch).
        energy_new = ops.stop_gradient(ops.max(energy, axis=-1, keepdims=True)) - energy
        attention = release_logits(ops.softmax(energy_new, axis=-1))
        # gamma * (A X) = (gamma A) X: scale the C x C map, not the N x C product; flush the
        # subnormal entries to zero (see the docstring: a slow path per subnormal operand) in
        # the forward value only. scaled + (flushed - scaled) is exactly flushed (x + (-x) is
        # +0), and its gradient is that of gamma A: gamma's gradient sum(A * dL/d(gamma A)) is
        # not masked, which a where() alone would do at gamma = 0 (every entry flushed).
        scaled = ops.cast(self.gamma, "float32") * attention
        flushed = ops.where(ops.abs(scaled) < _SMALLEST_NORMAL, 0.0, scaled)
        scaled = ops.cast(scaled + ops.stop_gradient(flushed - scaled), self.compute_dtype)
        # out[i, n] = sum_j gamma A[i, j] X[j, n]:  (B, N, C) @ (B, C, C)^T -> (B, N, C), in
        # the compute dtype (A's rows are convex weights: no overflow under float16).
        flat_input = ops.reshape(ops.cast(inputs, self.compute_dtype), (-1, height * width,
                                                                        channels))
        context = ops.matmul(flat_input, ops.transpose(scaled, (0, 2, 1)))
        context = ops.reshape(ops.cast(context, "float32"), (-1, height, width, channels))
        outputs = ops.cast(context + x, self.compute_dtype)
        if return_attention_scores:
            return outputs, attention
        return outputs

    def reference_weight_mapping(self):
        """DANet ``CAM_Module`` state-dict keys -> our variables."""
        return {"gamma": (self.gamma, "copy")}

    def get_config(self):
        return super().get_config()

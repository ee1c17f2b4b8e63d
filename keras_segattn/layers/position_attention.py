"""DANet position attention module (PAM)."""

import keras
from keras import ops

from keras_segattn.layers._common import QueryKeyValueAttention, softmax_attention


@keras.saving.register_keras_serializable(package="keras_segattn")
class PositionAttention(QueryKeyValueAttention):
    """Position attention module (PAM) of DANet.

    Paper: Jun Fu, Jing Liu, Haijie Tian, Yong Li, Yongjun Bao, Zhiwei Fang, Hanqing Lu,
    "Dual Attention Network for Scene Segmentation", CVPR 2019, arXiv:1809.02983.

    Every position attends to every other position. With ``x`` flattened to ``(N, C)``
    (``N = H*W``, row-major) and 1x1 projections with bias ``Q = x W_q + b_q``,
    ``K = x W_k + b_k`` (``C // reduction`` channels) and ``V = x W_v + b_v`` (``C`` channels):

        E = Q K^T                      (N x N, no 1/sqrt(d) scaling)
        A = softmax(E, axis=keys)
        y = gamma * (A V) + x          (gamma: one learnable scalar, initialised to 0)

    Memory is O(N^2): a 128x128 map needs a 1 GiB float32 energy matrix per image in
    training. Inference computes the attention in blocks of query rows
    (``softmax_attention(blockwise=True)``): about two 16 MiB blocks whatever the size.

    Reference: junfu1115/DANet @ ``b0a0fa008148f102321cdaa7ca38fb0ddd0239d1``,
    ``encoding/nn/da_att.py``, ``PAM_Module``. Weights port 1:1 with
    ``keras_segattn.convert.load_reference_weights`` (keys ``query_conv.weight``, ...,
    ``gamma``). Deviations: none (the paper's BN+ReLU on the projections is not in the
    code, and is not here either). Under mixed precision the energies and the softmax are
    computed in float32 and the product ``A V`` in the compute dtype.

    Input: ``(B, H, W, C)``. Output: ``(B, H, W, C)``; with ``return_attention_scores=True``
    also the attention map ``(B, N, N)`` (query position, key position; float32).

    Args:
        reduction: int, channel reduction of the query/key projections (``C // reduction``
            channels, must be >= 1). Default 8.

    Call arguments:
        inputs: ``(B, H, W, C)`` feature map.
        training: bool. Only memory depends on it: in inference (not true) the attention is
            computed in blocks of query rows (same values up to float rounding).
        return_attention_scores: bool. If ``True`` return ``(output, attention)`` (the whole
            map, never in blocks).

    Example:
    >>> layer = PositionAttention(reduction=8)
    >>> tuple(layer(keras.ops.ones((2, 9, 7, 24))).shape)
    (2, 9, 7, 24)
    """

    # What keras_segattn.visualize draws for this layer.
    attention_kind = "position"

    def call(self, inputs, training=None, return_attention_scores=False):
        shape = ops.shape(inputs)
        height, width, channels = shape[1], shape[2], shape[3]
        # (B, N, C'), (B, N, C') in float32; N = H*W row-major.
        query = self.flat_projection(self.query_conv, inputs)
        key = self.flat_projection(self.key_conv, inputs)
        # softmax(Q K^T) V: (B, N, C) in the compute dtype, the N x N energies and soft-max in
        # float32. V (B, N, C) is projected after the soft-max where the plain expression
        # runs (as the reference does: at the eager peak, energies and attention, it does not
        # exist yet). Under mixed precision the largest product (A V, N^2 C multiply-adds, 8x
        # the energies') runs in float16/bfloat16: each row of A holds convex weights.
        result = softmax_attention(
            query, key, lambda: self.flat_projection(self.value_conv, inputs, self.compute_dtype),
            return_attention=return_attention_scores, blockwise=not training)
        context, attention = result if return_attention_scores else (result, None)
        context = ops.reshape(ops.cast(context, "float32"), (-1, height, width, channels))
        gamma = ops.cast(self.gamma, "float32")
        outputs = ops.cast(gamma * context + ops.cast(inputs, "float32"), self.compute_dtype)
        if return_attention_scores:
            return outputs, attention
        return outputs

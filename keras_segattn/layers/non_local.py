"""Non-local block (embedded Gaussian), as mmcv ``NonLocal2d`` is used by mmsegmentation."""

import keras
from keras import ops

from keras_segattn import convert
from keras_segattn.layers._checks import input_channels, positive_integer, reduced_channels
from keras_segattn.layers._common import pointwise_conv, softmax_attention
from keras_segattn.layers.batch_norm import apply_batch_norm


@keras.saving.register_keras_serializable(package="keras_segattn")
class NonLocalBlock(keras.layers.Layer):
    """Non-local block, embedded-Gaussian form (the mmseg ``NLHead`` baseline).

    Paper: Xiaolong Wang, Ross Girshick, Abhinav Gupta, Kaiming He, "Non-local Neural
    Networks", CVPR 2018, arXiv:1711.07971.

    With ``x`` flattened to ``(N, C)``, 1x1 convs with bias ``g, theta, phi`` to
    ``C' = C // reduction`` channels:

        f = theta(x) phi(x)^T / sqrt(C')     (N x N; no 1/sqrt(C') if use_scale=False)
        y = softmax(f, axis=keys) g(x)       (N x C')
        z = x + BN(W_out y)                  (W_out: 1x1 conv C' -> C without bias;
                                              BN eps 1e-5 with gamma initialised to 0)

    The zero-initialised BN scale makes the block the identity at init. Memory is O(N^2)
    in training; inference computes the attention in blocks of query rows
    (``softmax_attention(blockwise=True)``: about two 16 MiB blocks whatever the size).

    Reference: open-mmlab/mmcv @ ``0198abfd``, ``mmcv/cnn/bricks/non_local.py``,
    ``NonLocal2d(in_channels, reduction=2, use_scale=True, mode="embedded_gaussian",
    norm_cfg=BN)`` as built by mmsegmentation ``nl_head.py`` @ ``1cd613fa``; the official
    Caffe2 code (facebookresearch/video-nonlocal-net) scales by 1/sqrt(C') the same way.
    State-dict keys (ConvModule naming): ``g.conv.*``, ``theta.conv.*``, ``phi.conv.*``,
    ``conv_out.conv.weight``, ``conv_out.bn.{weight,bias,running_mean,running_var}``.
    Deviations: only the default mmseg configuration is provided (no sub-sampling, no
    other pairwise modes). Under mixed precision the energies and softmax run in float32,
    the product with ``g(x)`` in the compute dtype.

    Input: ``(B, H, W, C)``. Output: ``(B, H, W, C)``; with ``return_attention_scores=True``
    also the attention ``(B, N, N)`` (query position, key position; float32).

    Args:
        reduction: int, ``C' = C // reduction`` (must be >= 1). Default 2.
        use_scale: bool, divide the pairwise term by ``sqrt(C')``. Default ``True``.

    Call arguments:
        inputs: ``(B, H, W, C)`` feature map.
        training: bool, BatchNormalization mode; not true: the attention in blocks of
            query rows (same values up to float rounding, less memory).
        return_attention_scores: bool. If ``True`` return ``(output, attention)`` (the whole
            map, never in blocks).

    Example:
    >>> layer = NonLocalBlock(reduction=2)
    >>> tuple(layer(keras.ops.ones((2, 7, 5, 8))).shape)
    (2, 7, 5, 8)
    """

    # What keras_segattn.visualize draws for this layer.
    attention_kind = "position"

    def __init__(self, reduction=2, use_scale=True, **kwargs):
        super().__init__(**kwargs)
        self.reduction = positive_integer(self, "reduction", reduction)
        self.use_scale = bool(use_scale)

    def build(self, input_shape):
        channels = input_channels(self, input_shape)
        inter_channels = reduced_channels(self, channels, self.reduction, what="inner")

        def conv(filters, name, use_bias=True):
            return keras.layers.Conv2D(
                filters, 1, use_bias=use_bias, dtype=self.dtype_policy, name=name
            )

        self.g = conv(inter_channels, "g")
        self.theta = conv(inter_channels, "theta")
        self.phi = conv(inter_channels, "phi")
        for layer in (self.g, self.theta, self.phi):
            layer.build(input_shape)
        inner_shape = (*tuple(input_shape)[:-1], inter_channels)
        self.conv_out = conv(channels, "conv_out", use_bias=False)
        self.conv_out.build(inner_shape)
        self.norm_out = keras.layers.BatchNormalization(
            epsilon=1e-5, momentum=0.9, gamma_initializer="zeros", dtype=self.dtype_policy,
            name="conv_out_bn",
        )
        self.norm_out.build(tuple(input_shape))
        self.built = True

    def call(self, inputs, training=None, return_attention_scores=False):
        shape = ops.shape(inputs)
        height, width = shape[1], shape[2]
        inter_channels = self.g.filters
        num_positions = height * width

        def flat(projection, dtype="float32"):
            # (B, H, W, C') -> (B, N, C')
            x = ops.cast(pointwise_conv(projection, inputs), dtype)
            return ops.reshape(x, (-1, num_positions, inter_channels))

        g_x, theta_x, phi_x = flat(self.g, self.compute_dtype), flat(self.theta), flat(self.phi)
        if self.use_scale:
            # (theta / sqrt(C')) phi^T: scale the N x C' factor, not the N x N product
            theta_x = theta_x * (1.0 / float(inter_channels) ** 0.5)
        # softmax(theta phi^T) g: (B, N, N) energies and soft-max in float32, the product
        # with g (B, N, C') in the compute dtype (convex weights: no overflow under float16)
        result = softmax_attention(theta_x, phi_x, g_x, return_attention=return_attention_scores,
                                   blockwise=not training)
        y, attention = result if return_attention_scores else (result, None)
        y = ops.reshape(y, (-1, height, width, inter_channels))
        y = apply_batch_norm(self.norm_out, pointwise_conv(self.conv_out, y), training=training)
        outputs = inputs + y
        if return_attention_scores:
            return outputs, attention
        return outputs

    def reference_weight_mapping(self):
        """mmcv ``NonLocal2d`` (ConvModule naming) state-dict keys -> our variables."""
        mapping = {}
        for name in ("g", "theta", "phi", "conv_out"):
            mapping.update(convert.conv_mapping(f"{name}.conv", getattr(self, name)))
        mapping.update(convert.batch_norm_mapping("conv_out.bn", self.norm_out))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({"reduction": self.reduction, "use_scale": self.use_scale})
        return config

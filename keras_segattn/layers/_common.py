"""Pieces shared by several attention layers (private; the public API is the layers)."""

import keras
from keras import ops

from keras_segattn import convert
from keras_segattn.layers._checks import input_channels, positive_integer, reduced_channels


def static_size(x, axis):
    """Static size of ``axis`` as a Python int, else a scalar tensor."""
    static = x.shape[axis]
    return int(static) if static is not None else ops.shape(x)[axis]


def pointwise_conv(conv, x, add_bias=True):
    """``conv(x)`` for a built 1x1, stride-1, undilated ``keras.layers.Conv2D`` without
    activation, computed as a matmul over the channel axis: ``x @ kernel[0, 0] + bias``.

    The same variables and the same result as calling the layer (``(B, H, W, C)`` ->
    ``(B, H, W, F)`` in ``conv``'s compute dtype). Why: Keras' torch backend runs every
    ``Conv2D`` through PyTorch's NCHW convolution and copies its input to channels-first and
    back to channels-last memory on each call (two copies of the input, 168 of
    EfficientAttention's 244 ms forward at 64x64x512 in the issue-15 profile); a matmul on the
    channels-last tensor needs no copy, on every backend. ``add_bias=False`` leaves the bias
    out, for a layer that adds it later where it is cheaper (it must then add it itself).
    """
    dtype = conv.compute_dtype
    kernel = ops.cast(conv.kernel, dtype)
    # (B, H, W, C) @ (C, F) -> (B, H, W, F)
    y = ops.matmul(ops.cast(x, dtype), ops.reshape(kernel, (kernel.shape[-2], kernel.shape[-1])))
    if conv.use_bias and add_bias:
        y = y + ops.cast(conv.bias, dtype)
    return y


def pad_or_crop_axis(x, out_size, offset, axis):
    """``y[i] = x[i - offset]`` where ``0 <= i - offset < len(x)``, else 0, for ``i < out_size``.

    A gather + mask instead of ``ops.pad``/slicing so that ``offset``/``out_size`` may be
    symbolic (unknown spatial size) on every backend. With ``offset <= 0`` it crops; with
    ``offset == 0`` it zero-pads (or crops) at the end.
    """
    in_size = static_size(x, axis)
    if all(isinstance(v, int) for v in (in_size, out_size, offset)):
        # Static sizes: a plain pad or slice (one copy; the gather below reads the input
        # through an index and its gradient scatters back, twice the work on eager torch).
        if offset == 0 and out_size == in_size:
            return x
        if 0 <= offset and offset + in_size <= out_size:
            padding = [(0, 0)] * len(x.shape)
            padding[axis] = (offset, out_size - in_size - offset)
            return ops.pad(x, padding)
        if offset <= 0 and out_size - offset <= in_size:
            index = [slice(None)] * len(x.shape)
            index[axis] = slice(-offset, out_size - offset)
            return x[tuple(index)]
    index = ops.arange(0, out_size, 1, dtype="int32") - ops.cast(offset, "int32")
    valid = ops.logical_and(index >= 0, index < ops.cast(in_size, "int32"))
    index = ops.clip(index, 0, ops.cast(in_size, "int32") - 1)
    y = ops.take(x, index, axis=axis)
    shape = [1] * len(x.shape)
    shape[axis] = -1
    return y * ops.reshape(ops.cast(valid, y.dtype), shape)


class QueryKeyValueAttention(keras.layers.Layer):
    """Base of the DANet-style layers: 1x1 ``query_conv``/``key_conv`` to ``C // reduction``
    channels, ``value_conv`` to ``C`` channels (all with bias) and a zero-initialised
    float32 scalar ``gamma``. Subclasses implement ``call``.
    """

    def __init__(self, reduction=8, **kwargs):
        super().__init__(**kwargs)
        self.reduction = positive_integer(self, "reduction", reduction)

    def build(self, input_shape):
        channels = input_channels(self, input_shape)
        key_channels = reduced_channels(self, channels, self.reduction)

        def conv(filters, name):
            layer = keras.layers.Conv2D(
                filters, 1, use_bias=True, dtype=self.dtype_policy, name=name
            )
            layer.build(input_shape)
            return layer

        self.query_conv = conv(key_channels, "query_conv")
        self.key_conv = conv(key_channels, "key_conv")
        self.value_conv = conv(channels, "value_conv")
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")
        self.built = True

    def flat_projections(self, inputs, value_dtype="float32"):
        """``(query, key, value)`` flattened to ``(B, N, C')``, ``(B, N, C')``, ``(B, N, C)``;
        ``N = H*W`` in PyTorch's row-major order. Query and key in float32 (they make the
        energies), the value in ``value_dtype``."""
        return (self.flat_projection(self.query_conv, inputs),
                self.flat_projection(self.key_conv, inputs),
                self.flat_projection(self.value_conv, inputs, value_dtype))

    @staticmethod
    def flat_projection(projection, inputs, dtype="float32"):
        """One 1x1 projection of ``inputs`` flattened: ``(B, H, W, C)`` -> ``(B, N, C')``."""
        shape = ops.shape(inputs)
        y = ops.cast(pointwise_conv(projection, inputs), dtype)
        return ops.reshape(y, (-1, shape[1] * shape[2], projection.filters))

    def reference_weight_mapping(self):
        """Reference state-dict keys (``query_conv.*``, ``key_conv.*``, ``value_conv.*``,
        ``gamma``) -> our variables."""
        mapping = {"gamma": (self.gamma, "copy")}
        for name in ("query_conv", "key_conv", "value_conv"):
            mapping.update(convert.conv_mapping(name, getattr(self, name)))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({"reduction": self.reduction})
        return config

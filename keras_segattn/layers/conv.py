"""``Conv2D``: ``keras.layers.Conv2D`` that convolves channels-last memory directly on torch.

Backend adapter (PyTorch only), on purpose. Keras' torch backend runs a channels-last
``Conv2D`` by copying its input to channels-first memory (``permute(...).contiguous()``) and
then back to channels-last memory (``contiguous(memory_format=channels_last)``, which oneDNN
prefers) before it convolves: two copies of the input per call, and their two gradient copies
in the backward pass. PyTorch's convolution reads the NCHW *view* of an NHWC tensor as
channels-last memory and writes its output the same way, so the view needs no copy at all.
``Conv2D.convolution_op`` calls ``torch.nn.functional.conv2d`` on that view with the layer's
own kernel (``(kh, kw, C_in, C_out)`` as a ``(C_out, C_in, kh, kw)`` weight in channels-last
memory, made by one 2-D transpose, which oneDNN takes without a copy of its own), strides,
dilations and groups.

Keras' ``padding="same"`` pads ``total = max((ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)``
along each spatial axis, ``total // 2`` before and the rest after. PyTorch's ``padding``
argument is symmetric, so the fast path takes ``same`` only where ``total`` is even on both
axes (every odd kernel at stride 1); an uneven ``same`` padding, unknown spatial sizes and
every other backend use Keras' own ``convolution_op``. Same variables, config, class name
(weight files name it as Keras' ``conv2d_N``) and results up to float rounding
(``tests/layers/test_conv.py``).
"""

import math

import keras


@keras.saving.register_keras_serializable(package="keras_segattn")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` without the channels-first copies on the torch backend.

    Our backbone graphs (``resnet*_v1c`` and the KerasHub- and KerasCV-layout dilated ResNets)
    and ``ConvBNAct`` (the heads' k x k convolutions) use it. See the module docstring for the maths of the padding and when Keras' own path is
    taken.

    Example:
    >>> conv = Conv2D(4, 3, padding="same", dilation_rate=2)
    >>> tuple(conv(keras.ops.ones((1, 9, 7, 3))).shape)
    (1, 9, 7, 4)
    """

    def convolution_op(self, inputs, kernel):
        padding = (self._symmetric_padding(inputs.shape)
                   if keras.backend.backend() == "torch" else None)
        if padding is None:
            return super().convolution_op(inputs, kernel)
        import torch

        channels_first = keras.ops.convert_to_tensor(inputs).permute(0, 3, 1, 2)
        weight = self._channels_last_weight(keras.ops.convert_to_tensor(kernel))
        outputs = torch.nn.functional.conv2d(
            channels_first, weight, None, self.strides, padding, self.dilation_rate, self.groups
        )
        return outputs.permute(0, 2, 3, 1)

    @staticmethod
    def _channels_last_weight(kernel):
        """The ``(kh, kw, C_in, C_out)`` kernel as PyTorch's ``(C_out, C_in, kh, kw)`` weight in
        channels-last memory (``C_out, kh, kw, C_in`` order), which oneDNN takes as it is.

        One 2-D transpose ``(kh kw C_in, C_out) -> (C_out, kh kw C_in)``: PyTorch copies a 2-D
        transposed matrix with its blocked transpose kernel, while the 4-D permutation of the
        plain ``permute(3, 2, 0, 1)`` view is copied element by element (3x3x512x512: 2.6 vs
        10 ms on our 2-core CPU, once in the forward pass and again in the backward pass).
        """
        kh, kw, in_channels, out_channels = kernel.shape
        transposed = kernel.reshape(kh * kw * in_channels, out_channels).t().contiguous()
        return transposed.view(out_channels, kh, kw, in_channels).permute(0, 3, 1, 2)

    def _symmetric_padding(self, input_shape):
        """Per-axis padding as PyTorch takes it, or ``None`` where PyTorch cannot take it."""
        if self.data_format != "channels_last" or len(input_shape) != 4:
            return None
        if self.padding == "valid":
            return (0, 0)
        padding = []
        for size, kernel, stride, rate in zip(
            input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate
        ):
            if size is None:
                return None
            total = max((math.ceil(size / stride) - 1) * stride + rate * (kernel - 1) + 1 - size, 0)
            if total % 2:
                return None
            padding.append(total // 2)
        return tuple(padding)

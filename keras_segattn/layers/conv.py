"""``Conv2D``: ``keras.layers.Conv2D`` with a faster convolution on the torch and JAX backends.

Backend adapters, on purpose; both give Keras' results (same variables, config, padding).

PyTorch. Keras' torch backend runs a channels-last
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
axes (every odd kernel at stride 1); an uneven ``same`` padding, unknown spatial sizes, calls
traced by ``torch.compile`` (``layers._common.torch_compiling``) and every other backend use Keras' own
``convolution_op``. Same variables, config, class name
(weight files name it as Keras' ``conv2d_N``) and results up to float rounding
(``tests/layers/test_conv.py``).

JAX. XLA:CPU differentiates a convolution with respect to its kernel through a generic
"backward filter" convolution that runs 4-10x slower than the forward convolution of the
same FLOPs (measured with ``jax.jit`` on our 2-core CPU, 1x64x64x512: 3x3 kernel gradient
416 ms against a 75 ms forward; 1x1, 512 -> 512: 96 ms against 11 ms). Both are
products of the input with the output gradient, so here:

* a 1x1 kernel (any stride, no padding) is a matmul over the channel axis of the strided
  input, ``y = x[:, ::s, ::s] @ K[0, 0]``, whose gradients XLA computes as matmuls (1x1
  forward+backward 128 -> 38 ms at 512 -> 512, 706 -> 226 ms at 512 -> 2048). The product
  is written on the flattened ``(B H W, C)`` input: written on the 4-D tensor, XLA:CPU
  reduces the kernel gradient's three contracted axes to one by copying the output gradient
  transposed to ``(F, B H W)``;
* a k x k kernel at stride 1 keeps XLA's forward convolution and input gradient, and its
  kernel gradient is ``k * k`` matmuls over the positions, one per tap (``d`` the dilation,
  ``p`` the padding before, the output gradient taken as zero outside its extent)::

      dK[i, j, c, f] = sum_{b, h, w} x[b, h, w, c] * dy[b, h + p_h - i d, w + p_w - j d, f]

  (3x3, 1x64x64x512: 416 -> 94 ms; dilation 2: 383 -> 97 ms; 1x97x97x512: 845 -> 226 ms;
  2x64x64x256, dilation 2: 208 -> 63 ms), through ``jax.custom_vjp``; the products
  accumulate in float32 (mixed precision too). Only with at least 64 input and output
  channels: below that XLA's own gradient is as fast.

Other strides, groups and every other backend use Keras' own ``convolution_op``.

An input too small for the kernel (a ``valid`` window larger than the input) raises a one-line
``ValueError`` on every backend once the layer is built: Keras checks this only while it builds
the layer, and afterwards TensorFlow's oneDNN convolution returns an output of the input's size
filled with garbage (a 2x2 input through a built 3x3 ``valid`` layer), JAX an error about an
empty output and PyTorch a backend ``RuntimeError``.
"""

import functools

import keras

from keras_segattn.layers._common import (same_padding, torch_channels_last_weight,
                                           torch_compiling)


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
        pairs = self._padding_pairs(inputs.shape)
        self._check_output_size(inputs.shape, pairs)
        backend = keras.backend.backend()
        if backend == "jax":
            outputs = self._jax_convolution(inputs, kernel, pairs)
            return super().convolution_op(inputs, kernel) if outputs is None else outputs
        padding = None
        if backend == "torch" and not torch_compiling():
            padding = self._symmetric_padding(pairs)
        if padding is None:
            return super().convolution_op(inputs, kernel)
        import torch

        channels_first = keras.ops.convert_to_tensor(inputs).permute(0, 3, 1, 2)
        weight = torch_channels_last_weight(keras.ops.convert_to_tensor(kernel))
        outputs = torch.nn.functional.conv2d(
            channels_first, weight, None, self.strides, padding, self.dilation_rate, self.groups
        )
        return outputs.permute(0, 2, 3, 1)

    def _padding_pairs(self, input_shape):
        """``((top, bottom), (left, right))`` as Keras pads, or ``None`` for unknown sizes or
        another layout."""
        if self.data_format != "channels_last" or len(input_shape) != 4:
            return None
        if any(size is None for size in input_shape[1:3]):
            return None
        if self.padding == "valid":
            return ((0, 0), (0, 0))
        return tuple(same_padding(input_shape[1:3], self.kernel_size, self.strides,
                                  self.dilation_rate))

    def _check_output_size(self, input_shape, pairs):
        """Raise where a known spatial size is too small for the kernel (module docstring);
        ``pairs`` is ``_padding_pairs(input_shape)``."""
        if pairs is None:
            return
        output_size = [
            (size + before + after - rate * (kernel - 1) - 1) // stride + 1
            for size, (before, after), kernel, stride, rate in zip(
                input_shape[1:3], pairs, self.kernel_size, self.strides, self.dilation_rate
            )
        ]
        if min(output_size) <= 0:
            raise ValueError(
                f"Conv2D {self.name!r}: input of spatial size {input_shape[1]}x{input_shape[2]} "
                f"is too small for its {self.kernel_size[0]}x{self.kernel_size[1]} kernel "
                f"(dilation {tuple(self.dilation_rate)}, strides {tuple(self.strides)}, "
                f"padding {self.padding!r}): the output would be "
                f"{output_size[0]}x{output_size[1]}."
            )

    @staticmethod
    def _symmetric_padding(pairs):
        """Per-axis padding as PyTorch takes ``_padding_pairs``, or ``None`` where it cannot."""
        if pairs is None or any(before != after for before, after in pairs):
            return None
        return tuple(before for before, _ in pairs)

    def _jax_convolution(self, inputs, kernel, pairs):
        """The JAX path of the module docstring (``pairs`` from ``_padding_pairs``), or ``None``
        where Keras' own op is used."""
        if pairs is None or self.groups != 1:
            return None
        import jax.numpy as jnp

        kernel = jnp.asarray(kernel)
        inputs = jnp.asarray(inputs, dtype=kernel.dtype)
        if tuple(self.kernel_size) == (1, 1) and pairs == ((0, 0), (0, 0)):
            row_step, col_step = self.strides
            strided = inputs[:, ::row_step, ::col_step, :]
            # A 2-D product: its kernel gradient needs no transposed copy (module docstring).
            outputs = jnp.matmul(strided.reshape(-1, strided.shape[-1]), kernel[0, 0])
            return outputs.reshape(*strided.shape[:-1], kernel.shape[-1])
        if tuple(self.strides) == (1, 1) and min(kernel.shape[2:]) >= _JAX_TAPS_MIN_CHANNELS:
            return _jax_stride1_convolution()(inputs, kernel, pairs, tuple(self.dilation_rate))
        return None


# Below 64 input or output channels XLA's own kernel gradient is as fast or faster (3x3, 8 x 64 x
# 64 x 32: 17 ms against 25 ms tap by tap; 8 x 32 x 32 x 64: 10 against 8 ms).
_JAX_TAPS_MIN_CHANNELS = 64


@functools.cache
def _jax_stride1_convolution():
    """``f(x, kernel, padding, dilation)``: XLA's stride-1 convolution (NHWC, HWIO) whose kernel
    gradient is one matmul per tap (module docstring). Built on first use: JAX is imported only
    on the JAX backend."""
    import jax
    import jax.numpy as jnp

    def convolve(x, kernel, padding, dilation):
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), padding, rhs_dilation=dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    def kernel_gradient(x, dy, kernel, padding, dilation):
        kh, kw = kernel.shape[:2]
        height, width = x.shape[1:3]
        # dy[h + p - i d] for h < height, zero outside dy: pad dy so that every tap's window
        # is a plain slice.
        starts, pad_pairs = [], []
        for size, out_size, taps, (before, _), rate in zip(
            (height, width), dy.shape[1:3], (kh, kw), padding, dilation
        ):
            low = max(0, (taps - 1) * rate - before)
            high = max(0, before + size - out_size)
            starts.append([before - tap * rate + low for tap in range(taps)])
            pad_pairs.append((low, high))
        dy = jnp.pad(dy, ((0, 0), pad_pairs[0], pad_pairs[1], (0, 0)))
        rows = []
        for row_start in starts[0]:
            taps = []
            for col_start in starts[1]:
                window = dy[:, row_start:row_start + height, col_start:col_start + width, :]
                taps.append(jnp.einsum("bhwc,bhwf->cf", x, window,
                                       preferred_element_type=jnp.float32))
            rows.append(jnp.stack(taps))
        return jnp.stack(rows).astype(kernel.dtype)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
    def convolution(x, kernel, padding, dilation):
        return convolve(x, kernel, padding, dilation)

    def forward(x, kernel, padding, dilation):
        return convolve(x, kernel, padding, dilation), (x, kernel)

    def backward(padding, dilation, residuals, dy):
        x, kernel = residuals
        _, input_vjp = jax.vjp(lambda value: convolve(value, kernel, padding, dilation), x)
        (dx,) = input_vjp(dy)
        return dx, kernel_gradient(x, dy, kernel, padding, dilation)

    convolution.defvjp(forward, backward)
    return convolution

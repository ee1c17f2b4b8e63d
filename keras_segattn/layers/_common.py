"""Pieces shared by several attention layers (private; the public API is the layers)."""

import keras
from keras import ops

from keras_segattn import convert
from keras_segattn.layers._checks import input_channels, positive_integer, reduced_channels


def static_size(x, axis):
    """Static size of ``axis`` as a Python int, else a scalar tensor."""
    static = x.shape[axis]
    return int(static) if static is not None else ops.shape(x)[axis]


def with_written_out_gradient(forward):
    """``ops.custom_gradient`` for ``forward(*inputs) -> (value, gradient)``, where
    ``gradient(upstream)`` returns the inputs' gradients: the one way every written-out
    gradient in this package is defined.

    ``forward`` receives the inputs through ``ops.stop_gradient``: TensorFlow's tape records
    a custom gradient's inner operations too, and would hold what they keep (their inputs,
    transposed copies) for a gradient nobody asks for. ``gradient`` receives the upstream
    gradient however the backend passes it (positionally or as ``upstream=``, as Keras'
    ``custom_gradient`` documents).
    """

    @ops.custom_gradient
    def function(*inputs):
        value, gradient = forward(*(ops.stop_gradient(x) for x in inputs))

        def backend_gradient(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return gradient(upstream)

        return value, backend_gradient

    return function


def pointwise_conv(conv, x, add_bias=True):
    """``conv(x)`` for a built 1x1, stride-1, undilated ``keras.layers.Conv2D`` without
    activation: ``x @ kernel[0, 0] + bias`` over the channel axis.

    The same variables and the same result as calling the layer (``(B, H, W, C)`` ->
    ``(B, H, W, F)`` in ``conv``'s compute dtype). Why not the layer: Keras' torch backend
    runs every ``Conv2D`` through PyTorch's NCHW convolution and copies its input to
    channels-first and back to channels-last memory on each call (two copies of the input,
    168 of EfficientAttention's 244 ms forward at 64x64x512 in the issue-15 profile).

    * torch (not traced by ``torch.compile``): PyTorch's convolution of the NCHW view of the
      NHWC map, with the kernel as a channels-last weight (the layout of ``Conv2D``'s torch
      path; no copy of the map). PyTorch runs it with oneDNN, whose kernels were 1.2-1.7x
      faster than its matmul (MKL) on the AMD EPYC development machine: forward+backward of
      1x104x104, 512 -> 256 channels 70 -> 44 ms, 64 x 13x13 groups 70 -> 52 ms.
    * elsewhere: the 2-D product ``(B H W, C) @ (C, F)``, whose kernel gradient is one 2-D
      product of the flat input and output gradient. Written on the 4-D tensor, XLA:CPU
      reduces the kernel gradient's three contracted axes to one by writing the output
      gradient transposed to ``(F, B H W)``, fused with its producer (ISA's forward+backward,
      ``jax.jit``, 64x64x512: 12 such copies, 105 of 397 ms).

    ``add_bias=False`` leaves the bias out, for a layer that adds it later where it is cheaper
    (it must then add it itself).
    """
    dtype = conv.compute_dtype
    kernel = ops.cast(conv.kernel, dtype)
    in_channels, filters = kernel.shape[-2], kernel.shape[-1]
    bias = ops.cast(conv.bias, dtype) if conv.use_bias and add_bias else None
    x = ops.cast(x, dtype)
    if keras.backend.backend() == "torch" and len(x.shape) == 4 and not torch_compiling():
        import torch

        weight = torch_channels_last_weight(ops.convert_to_tensor(kernel))
        y = torch.nn.functional.conv2d(ops.convert_to_tensor(x).permute(0, 3, 1, 2), weight, bias)
        return y.permute(0, 2, 3, 1)
    shape = ops.shape(x)
    y = ops.matmul(ops.reshape(x, (-1, in_channels)), ops.reshape(kernel, (in_channels, filters)))
    if bias is not None:
        # ops.add, not ``+``: on TensorFlow it adds a bias vector with ``BiasAdd``, whose
        # gradient needs none of its inputs, where ``+`` is an ``AddV2`` that TensorFlow's
        # eager tape keeps both inputs of: the N x F product alive until the backward.
        y = ops.add(y, bias)
    return ops.reshape(y, (*shape[:-1], filters))


def torch_compiling():
    """Whether ``torch.compile`` is tracing the call (then no channels-last convolution).

    Inductor (``torch==2.13.0``) fails to compile a convolution in channels-last memory with
    a gradient once the sizes are symbolic, which they are from the second image size on
    (automatic dynamic shapes; Keras' ``jit_compile=True`` on torch is ``torch.compile`` with
    its defaults): ``cannot determine truth value of Relational: 16*s27*s53 < 16``. A plain
    ``F.conv2d`` on the NCHW view of an NHWC tensor fails the same way; the contiguous NCHW
    copy of Keras' path compiles, and Inductor chooses the memory layout of a compiled
    convolution itself. Inside the trace the sizes cannot be told apart from static ones
    (``isinstance(size, int)`` is true there), so every compiled call takes Keras' path.
    """
    import torch

    return torch.compiler.is_compiling()


def torch_channels_last_weight(kernel):
    """A ``(kh, kw, C_in, C_out)`` torch kernel as PyTorch's ``(C_out, C_in, kh, kw)`` weight in
    channels-last memory (``C_out, kh, kw, C_in`` order), which oneDNN takes as it is.

    One 2-D transpose ``(kh kw C_in, C_out) -> (C_out, kh kw C_in)``: PyTorch copies a 2-D
    transposed matrix with its blocked transpose kernel, while the 4-D permutation of the
    plain ``permute(3, 2, 0, 1)`` view is copied element by element (3x3x512x512: 2.6 vs
    10 ms on our 2-core CPU, once in the forward pass and again in the backward pass).
    """
    kh, kw, in_channels, out_channels = kernel.shape
    transposed = kernel.reshape(kh * kw * in_channels, out_channels).t().contiguous()
    return transposed.view(out_channels, kh, kw, in_channels).permute(0, 3, 1, 2)


def project_weighted_sums(conv, sums, totals=None, heads=1):
    """A 1x1 ``conv``'s projection of weighted sums of its input, without projecting the input.

    For weights ``w_n`` over the ``N`` positions, ``sum_n w_n (x_n W + b) =
    (sum_n w_n x_n) W + (sum_n w_n) b``: the ``k`` sums ``sums`` (``sum_n w_n x_n``, over ``C``
    input channels) are projected instead of the ``N x C`` input, which attention layers use
    when their values enter only through such sums (``K^T V``, ``sum_n V_n``).

    ``sums``: ``(..., k, C)`` with ``heads=1``, else ``(B, heads, k, C)``, in float32.
    ``totals``: the weights' sums ``sum_n w_n``, ``sums``' shape without ``C`` (or a scalar
    common to all); ``None`` when every column of weights sums to 1 (a soft-max over the
    positions). Returns float32 ``(..., k, F / heads)``, head ``i`` projected by the output
    channels ``[i F / heads, (i + 1) F / heads)``.
    """
    in_channels, filters = conv.kernel.shape[-2], conv.kernel.shape[-1]
    kernel = ops.cast(conv.kernel, "float32")
    if heads == 1:
        # (B, k, C) @ (C, F) -> (B, k, F)
        projected = ops.matmul(sums, ops.reshape(kernel, (in_channels, filters)))
        bias_shape = (filters,)
    else:
        # (B, h, k, C) x (C, h, F / h) -> (B, h, k, F / h)
        projected = ops.einsum(
            "bhkc,chv->bhkv", sums, ops.reshape(kernel, (in_channels, heads, filters // heads))
        )
        bias_shape = (1, heads, 1, filters // heads)
    if not conv.use_bias:
        return projected
    bias = ops.reshape(ops.cast(conv.bias, "float32"), bias_shape)
    if totals is None:
        return projected + bias
    return projected + ops.expand_dims(totals, -1) * bias


def scale_by(x, factor, broadcast_axis):
    """``x * factor`` for ``x`` ``(B, N, C)`` and ``factor`` ``(B, C)`` (``broadcast_axis=1``,
    one factor per channel) or ``(B, N)`` (``broadcast_axis=2``, one per position).

    On JAX the product has a written-out gradient: ``dx = dy * factor`` and ``dfactor`` the
    contraction ``einsum("bnc,bnc->bc", x, dy)`` (or ``"->bn"``). XLA:CPU's own gradient
    with respect to the factor, ``sum(x * dy, axis=1)``, is a multiply-and-sum that it hands
    to YNNPACK as one fusion running 30-70x slower than the same sum as a contraction
    (``jax.jit``, 1 x 4096 x 512, our 2-core CPU: 48 ms against 1.4 ms). Writing the product
    itself as an ``einsum`` also gives the contraction, but its gradient with respect to
    ``x`` is then a dot with batch axes ``(b, c)``, which XLA writes as ``(B, C, N)`` and
    copies transposed. LinearChannelAttention's ``jax.jit`` forward+backward at 64x64x512:
    145 ms with the plain product, 91-97 ms with the ``einsum`` form, 74-80 ms written out.
    Elsewhere the plain product: TensorFlow's XLA ran the ``einsum`` form slower
    (LinearChannelAttention's forward+backward 108 -> 122-131 ms), and PyTorch's autograd
    has no such fusion.
    """
    if keras.backend.backend() != "jax":
        return x * ops.expand_dims(factor, broadcast_axis)
    contraction = {1: "bnc,bnc->bc", 2: "bnc,bnc->bn"}[broadcast_axis]

    def scale(x, factor):
        expanded = ops.expand_dims(factor, broadcast_axis)

        def gradient(upstream):
            return upstream * expanded, ops.einsum(contraction, x, upstream)

        return x * expanded, gradient

    return with_written_out_gradient(scale)(x, factor)


def gram_matrix(x):
    """``E = X^T X`` per batch element, ``(B, N, C)`` -> ``(B, C, C)``, computed from its
    distinct blocks, with one product in its gradient: ``dL/dX = X (G + G^T)`` for
    ``dL/dE = G``.

    The forward exploits the symmetry, as BLAS' ``syrk`` does (which no backend exposes):
    with ``X = [X1 X2]`` split into channel halves, ``E = [[X1^T X1, X1^T X2], [(X1^T X2)^T,
    X2^T X2]]``, three products of ``C/2 x C/2`` instead of one of ``C x C``: 3/4 of the
    multiplications. Measured alone at ``N = 4096``, ``C = 512`` (2-core CPU, median of 15):
    PyTorch 11.2 -> 9.7 ms, ``jax.jit`` 12.7 -> 11.2, TensorFlow XLA 13.7 -> 12.2, eager
    TensorFlow 11.2 -> 11.4 (its slices are copies); at ``C = 256`` PyTorch 2.9 -> 2.6,
    ``jax.jit`` 4.0 -> 3.0, while at ``C = 128`` the three products cost more than they save
    (PyTorch 0.82 -> 0.91 ms): below ``C = 256`` (and for an odd or unknown ``C``) one
    product.

    The gradient is written out on every backend (``with_written_out_gradient``):
    differentiating the blocks would form ``N x C/2`` gradients and scatter them into
    ``N x C`` ones, and differentiating both operands of ``X^T X`` forms two ``N x C``
    gradients and adds them, where ``X (G + G^T)`` is one product; TensorFlow's eager
    gradient of a batched product even computes a constant operand's gradient, and its
    ``einsum`` gradients write each ``N x C`` result transposed and copy it back (DANet's
    channel attention, eager forward+backward at 64x64x512 with a loss ``sum(y * dy)``: 49 ->
    45 MiB and 95 -> 73-80 ms with the gradient written out).
    """

    def gram(x):
        def gradient(upstream):
            return ops.matmul(x, upstream + ops.transpose(upstream, (0, 2, 1)))

        channels = x.shape[-1]
        if channels is None or channels % 2 or channels < 256:
            return ops.einsum("bnc,bnd->bcd", x, x), gradient
        half = channels // 2
        first, second = x[..., :half], x[..., half:]
        # (B, N, C/2) x (B, N, C/2) -> (B, C/2, C/2), three times
        top_left = ops.einsum("bnc,bnd->bcd", first, first)
        top_right = ops.einsum("bnc,bnd->bcd", first, second)
        bottom_right = ops.einsum("bnc,bnd->bcd", second, second)
        top = ops.concatenate([top_left, top_right], axis=-1)
        bottom = ops.concatenate([ops.transpose(top_right, (0, 2, 1)), bottom_right], axis=-1)
        return ops.concatenate([top, bottom], axis=1), gradient

    return with_written_out_gradient(gram)(x)


def sum_over_positions(a, b):
    """``a^T b`` per batch element, the sum over positions ``sum_n a[n, d] b[n, c]``:
    ``(B, N, D)`` and ``(B, N, C)`` -> ``(B, D, C)``.

    On TensorFlow and JAX the gradient is written out as two batched products that need no
    copy, ``dL/da = b G^T`` and ``dL/db = a G`` for ``dL/dE = G``. Their own ``einsum``
    gradients write each ``N x C`` result transposed, ``(B, C, N)``, and copy it back:
    TensorFlow's eager tape holds two transient maps per operand (LinearChannelAttention's
    eager forward+backward at 64x64x512: 64 -> 56 MiB with its two products over positions
    written out, official module 49), and XLA:CPU's ``jax.jit`` buffer assignment kept three
    such transposed copies (LinearChannelAttention's forward+backward at 64x64x512: 57 ->
    35 MiB, at 97x97 130 -> 77; official module 49 and 111). On PyTorch the ``einsum``,
    whose autograd hands back contiguous gradients in this operand order.
    """
    if keras.backend.backend() == "torch":
        return ops.einsum("bnd,bnc->bdc", a, b)

    def contract(a, b):
        def gradient(upstream):
            return ops.matmul(b, ops.transpose(upstream, (0, 2, 1))), ops.matmul(a, upstream)

        return ops.einsum("bnd,bnc->bdc", a, b), gradient

    return with_written_out_gradient(contract)(a, b)


def outer_product(column, row):
    """``column[:, :, None] * row[:, None, :]``: ``(B, N)`` and ``(B, C)`` -> ``(B, N, C)``.

    On JAX an ``einsum``, whose gradients are contractions (``scale_by`` says why the
    broadcast product's multiply-and-sum gradient is slow under XLA:CPU); elsewhere the
    broadcast product (PyTorch ran the ``einsum`` as a batched matmul of inner size 1, slower).
    """
    if keras.backend.backend() == "jax":
        return ops.einsum("bn,bc->bnc", column, row)
    return ops.expand_dims(column, 2) * ops.expand_dims(row, 1)


def same_padding(spatial_shape, kernel_size, strides, dilation_rate=None):
    """Keras' ``padding="same"`` as ``[(before, after), ...]`` per spatial axis of known size:
    ``total = max((ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)``, ``total // 2`` before and
    the rest after (``d`` the dilation rate, 1 by default: pooling)."""
    dilation_rate = dilation_rate or (1,) * len(kernel_size)
    pairs = []
    for size, kernel, stride, rate in zip(spatial_shape, kernel_size, strides, dilation_rate):
        total = max((-(-size // stride) - 1) * stride + rate * (kernel - 1) + 1 - size, 0)
        pairs.append((total // 2, total - total // 2))
    return pairs


def pad(x, padding, constant_values=0):
    """``ops.pad(x, padding, constant_values=constant_values)`` (zeros by default), without
    Keras' ``Pad`` operation on the torch backend.

    ``keras.ops.pad`` (Keras 3.15) makes a ``Pad`` operation at every call, and its unique
    name advances a global counter; ``torch.compile`` guards on that counter, so a compiled
    layer that pads recompiled at every call (ISA at 97x97, padded to 104x104: 0.3 s calls
    took 1.0-2.1 s) until dynamo's recompile limit, and then ran eagerly. On torch this is
    ``torch.nn.functional.pad``, which ``ops.pad`` calls there too; elsewhere ``ops.pad``.
    """
    if keras.backend.backend() != "torch":
        return ops.pad(x, padding, constant_values=constant_values)
    import torch

    flat = [amount for pair in reversed(padding) for amount in pair]  # last axis first
    return torch.nn.functional.pad(ops.convert_to_tensor(x), flat, value=constant_values)


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
            return pad(x, padding)
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


def pad_or_crop_spatial(x, out_height, out_width, top, left):
    """``pad_or_crop_axis`` along axes 1 (``out_height``, offset ``top``) and 2
    (``out_width``, ``left``) of a ``(B, H, W, C)`` map: with static sizes where both axes
    are padded or both cropped, one ``ops.pad`` or one slice.

    One operation instead of two: TensorFlow's eager tape keeps the input of a pad or a slice
    for its gradient, so the map between two of them stayed alive until the backward (ISA
    at 97x97x512, padded to 104x104: 20 MiB for the pad and 20 for the crop).
    """
    sizes = (static_size(x, 1), static_size(x, 2))
    outs, offsets = (out_height, out_width), (top, left)
    if all(isinstance(v, int) for v in sizes + outs + offsets):
        if sizes == outs and offsets == (0, 0):
            return x
        if all(0 <= o and o + n <= m for n, m, o in zip(sizes, outs, offsets)):
            padding = [(0, 0), *((o, m - n - o) for n, m, o in zip(sizes, outs, offsets)),
                       (0, 0)]
            return pad(x, padding)
        if all(o <= 0 and m - o <= n for n, m, o in zip(sizes, outs, offsets)):
            return x[:, -top:out_height - top, -left:out_width - left]
    return pad_or_crop_axis(pad_or_crop_axis(x, out_height, top, 1), out_width, left, 2)


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


def release_logits(probabilities):
    """``probabilities`` (the output of ``ops.softmax`` / ``ops.sigmoid``) without the
    reference to their input that Keras' TensorFlow backend attaches to them.

    Keras' TensorFlow ``softmax`` and ``sigmoid`` store their input on their output
    (``output._keras_logits``, so that a crossentropy given probabilities can use the logits
    instead). In eager mode that keeps every attention layer's energies alive for as long as
    its attention map: one more ``N x N`` float32 map at the peak of PAM's forward and
    backward passes (measured: the written-out gradient of ``softmax_attention`` at
    ``N = 4096`` peaks at 5.1 ``N^2`` floats with the reference kept, 3.25 without). None of
    our layers feeds an attention map to a loss, so the reference is dropped. Other backends
    attach nothing; the tensor is returned unchanged.
    """
    if hasattr(probabilities, "_keras_logits"):
        del probabilities._keras_logits
    return probabilities


# Inference (``blockwise=True``) splits the queries into blocks whose energies hold at most
# about this many floats per block (16 MiB in float32).
ATTENTION_BLOCK_ELEMENTS = 2 ** 22


def softmax_attention(query, key, value, scale=None, return_attention=False, blockwise=False):
    """``softmax(scale * Q K^T, axis=keys) V``: the dot-product attention of PAM, the
    non-local block and ISA, with a gradient that holds at most three ``N x M`` maps (on
    TensorFlow one whole map and two blocks), and in inference about two blocks of
    ``ATTENTION_BLOCK_ELEMENTS`` energies.

    Shapes: ``query`` ``(B, N, d)`` and ``key`` ``(B, M, d)`` in float32; ``value``
    ``(B, M, C)`` in the compute dtype, or a function without arguments that returns it
    (the plain path calls it after the soft-max, so that in eager mode the value does not
    exist yet at the peak of energies and attention, as in the reference modules; the
    written-out gradient needs it as an input). Returns the context ``(B, N, C)`` in the
    value's dtype (the soft-maxed weights are convex, so under ``mixed_float16`` the
    ``N M C`` product runs in half precision without overflow); with
    ``return_attention=True``, ``(context, attention)``, the attention ``(B, N, M)`` float32.

    The energies ``E = scale * Q K^T`` and the softmax are float32. Forward and backward:

        A = softmax(E),  O = A V
        dV = A^T dO,  dA = dO V^T,  dE = A * (dA - rowsum(A * dA)),
        dQ = scale * dE K,  dK = scale * dE^T Q

    Where the value has fewer channels than there are keys (``C < M``: PAM, the non-local
    block), ``rowsum(A * dA)_n = sum_m A_nm (dO_n . V_m) = dO_n . O_n`` is taken from the
    context (an ``N x C`` product, as FlashAttention's backward does) instead of an ``N x M``
    product and row sum: one ``N x M`` temporary fewer, and on JAX no multiply-and-sum of
    ``N x M`` maps, which XLA:CPU fused into the ``dO V^T`` product as a YNNPACK fusion 1.5x
    slower than the product alone (the non-local block's ``jax.jit`` forward+backward at
    64x64x512: 459 -> 404 ms with its initial weights, 444 -> 437 ms with the benchmark's;
    TensorFlow ``GradientTape`` 457 -> 409 ms). ISA's groups have
    ``M = 64`` keys and 512 value channels, so they keep ``rowsum(A * dA)``.

    Why the gradient is written out on TensorFlow and JAX: their automatic gradients hold
    more ``N x M`` maps at once than the official PyTorch modules, whose autograd keeps
    only ``A`` (PAM at 97x97x512, forward+backward, against the official module's 1411 MiB:
    TensorFlow's ``GradientTape`` 1814 MiB, JAX ``jit`` 1447-1557 MiB of RSS; XLA:CPU's
    compiled backward holds four ``N x N`` buffers where this one holds three). This
    gradient keeps ``Q``, ``K``, ``V`` and ``A`` from the forward pass, rebinds each
    ``N x M`` temporary so that eager mode frees the previous one, and writes the
    transposed products as ``einsum`` contractions (no transposed ``N x M`` copy); with
    ``release_logits`` a TensorFlow ``GradientTape`` step over it peaks at 3.25 ``N^2``
    floats at ``N = 4096`` (4.3 with the automatic gradient). On TensorFlow the backward
    computes ``dA`` and ``dE`` in blocks of query rows (those of ``blockwise``, below) when
    the map is larger than a block, keeping the whole ``A`` only: forward+backward at
    97x97x512, PAM 1151 -> 724 MiB under ``GradientTape`` and 1092 -> 1071 under XLA, the
    non-local block 1142 -> 749 and 1089 -> 901 (official modules 1412 and 1077), time
    unchanged. ``jax.jit`` keeps the whole-map backward: XLA:CPU's buffer assignment grew
    with the blocks (PAM 755 -> 890 MiB, the non-local block 751 -> 766). On PyTorch, whose
    autograd already keeps only ``A`` and computes ``dE`` in one fused kernel, the plain
    expression runs, as it does with ``return_attention=True`` (the returned map is then
    differentiable like any tensor). ``tests/layers/test_softmax_attention.py`` checks
    values and gradients of every path against float64 NumPy.

    ``blockwise=True`` (the layers pass it in inference, ``training`` not true) computes the
    rows of the context in blocks of queries when the ``B x N x M`` energies exceed
    ``ATTENTION_BLOCK_ELEMENTS`` (2^22 floats, 16 MiB): each block's energies, soft-max and
    product with ``V`` are done before the next block starts, so inference holds two
    ``block x M`` maps instead of two ``N x M`` ones (the official modules hold the whole
    energies and attention: 680 MiB for PAM at 97x97, 8 GiB at 128x256, a 1024x2048 image at
    output stride 8). The soft-max is over keys, so each row of the context is the same
    computation either way (equal up to float rounding; still differentiable). It needs the
    static ``N`` and ``M`` (eager mode, ``jax.jit``, a traced function of fixed size); with
    an unknown size, or ``return_attention=True``, the whole map is computed.
    """
    blocks = _query_blocks(query, key) if blockwise and not return_attention else None
    if blocks is not None:
        if callable(value):
            value = value()
        return ops.concatenate(
            [_softmax_attention(query[:, start:stop], key, value, scale)[0]
             for start, stop in blocks], axis=1)
    if return_attention or keras.backend.backend() == "torch":
        context, attention = _softmax_attention(query, key, value, scale)
        return (context, attention) if return_attention else context
    if callable(value):
        value = value()

    # rowsum(A * dA) from the context where that is the smaller product (docstring)
    num_keys, value_channels = key.shape[1], value.shape[-1]
    row_sums_from_context = (isinstance(num_keys, int) and isinstance(value_channels, int)
                             and value_channels < num_keys)

    def attend(query, key, value):
        context, attention = _softmax_attention(query, key, value, scale)

        def gradient(upstream):
            # (B, N, M)^T (B, N, C) -> (B, M, C), in the value's dtype: one product with the
            # kept attention, no N x M temporary
            d_value = ops.einsum("bnm,bnc->bmc", ops.cast(attention, value.dtype), upstream)
            if row_sums_from_context:
                # rowsum(A * dA)_n = sum_m A_nm (dO_n . V_m) = dO_n . O_n: (B, N, 1)
                context_row_sums = ops.expand_dims(ops.einsum(
                    "bnc,bnc->bn", ops.cast(upstream, "float32"), ops.cast(context, "float32")
                ), -1)
            # dA, dE and their products in blocks of query rows on TensorFlow (each block's
            # two block x M maps are dropped before the next block starts; docstring), at
            # once on JAX, or when the map is small or of unknown size
            on_tensorflow = keras.backend.backend() == "tensorflow"
            blocks = _query_blocks(query, key) if on_tensorflow else None
            d_query_blocks, d_key = [], None
            for start, stop in blocks or [(0, None)]:
                block_attention = attention[:, start:stop]
                # (B, n, C) (B, M, C)^T -> (B, n, M); then dE = A * (dA - rowsum(A * dA))
                d_energy = ops.cast(
                    ops.einsum("bnc,bmc->bnm", upstream[:, start:stop], value), "float32"
                )
                if row_sums_from_context:
                    d_energy = d_energy - context_row_sums[:, start:stop]
                else:
                    d_energy = d_energy - ops.sum(
                        block_attention * d_energy, axis=-1, keepdims=True
                    )
                d_energy = block_attention * d_energy
                if scale is not None:
                    d_energy = d_energy * scale
                # (B, n, M) (B, M, d) -> (B, n, d), and (B, n, M)^T (B, n, d) -> (B, M, d)
                d_query_blocks.append(ops.matmul(d_energy, key))
                block_d_key = ops.einsum("bnm,bnd->bmd", d_energy, query[:, start:stop])
                d_key = block_d_key if d_key is None else d_key + block_d_key
                del d_energy, block_attention
            d_query = (d_query_blocks[0] if len(d_query_blocks) == 1
                       else ops.concatenate(d_query_blocks, axis=1))
            return d_query, d_key, d_value

        return context, gradient

    return with_written_out_gradient(attend)(query, key, value)


def _query_blocks(query, key):
    """``[(start, stop), ...]``: equal blocks of the ``N`` queries whose energies hold at most
    ``ATTENTION_BLOCK_ELEMENTS`` floats each, or ``None`` (one block suffices, or ``N`` or
    ``M`` is unknown or symbolic). An unknown batch size counts as 1."""
    batch, positions, keys = query.shape[0], query.shape[1], key.shape[1]
    # Python ints only: not None (TensorFlow), and not JAX's symbolic dimensions (Keras
    # infers output shapes with them), whose comparison with a number may be undecidable.
    if not isinstance(positions, int) or not isinstance(keys, int):
        return None
    row_elements = (batch if isinstance(batch, int) else 1) * keys
    if positions * row_elements <= ATTENTION_BLOCK_ELEMENTS:
        return None
    count = -(-positions * row_elements // ATTENTION_BLOCK_ELEMENTS)  # ceil
    rows = -(-positions // count)
    return [(start, min(start + rows, positions)) for start in range(0, positions, rows)]


def _softmax_attention(query, key, value, scale):
    """``(softmax(scale * Q K^T) V, softmax(...))``, see ``softmax_attention``."""
    # (B, N, d) @ (B, d, M) -> (B, N, M); each N x M map is dropped as soon as the next one
    # exists, so that in eager mode the energies are freed once soft-maxed
    energy = ops.matmul(query, ops.transpose(key, (0, 2, 1)))
    if scale is not None:
        energy = energy * scale
    attention = release_logits(ops.softmax(energy, axis=-1))
    del energy
    if callable(value):
        value = value()
    # (B, N, M) @ (B, M, C) -> (B, N, C), in the value's dtype
    context = ops.matmul(ops.cast(attention, value.dtype), value)
    return context, attention

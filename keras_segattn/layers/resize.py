"""Bilinear resize that works with unknown height/width on every backend and in export.

Why not ``keras.ops.image.resize``: in keras 3.14-3.15 it fails in TensorFlow graph mode when
H or W is unknown (``OperatorNotAllowedInGraphError``), which breaks ``fit``/``predict`` on
tf.data with dynamic sizes and ``model.export`` (see the stack notes, table #1). It also has
no ``align_corners=True`` mode, which DANet, CCNet, ISANet and FLANet use, and the JAX
backend antialiases when downsampling, unlike PyTorch's ``F.interpolate``.

Method: separable linear interpolation with gathers. For each axis we compute, from the
(possibly symbolic) input and output sizes, the two source indices and the weight of every
output position, then ``take`` the two source rows/columns and blend them. This is exactly
PyTorch's ``F.interpolate(mode="bilinear", align_corners=...)`` (no antialiasing), uses only
``keras.ops``, and lowers to GATHER/MUL/ADD in TFLite.

Source coordinate of output index ``o`` for input size ``n`` and output size ``m``:
    align_corners=False: ``src = max((o + 0.5) * n / m - 0.5, 0)``  (half-pixel centres)
    align_corners=True:  ``src = o * (n - 1) / (m - 1)``
then ``i0 = min(floor(src), n - 1)``, ``i1 = min(i0 + 1, n - 1)``, ``w1 = src - i0``.
"""

import math

import keras
import numpy as np
from keras import ops


def _is_static(value):
    return isinstance(value, int)


def _axis_grid(in_size, out_size):
    """``(xp, number, in_f, out_f, positions)``: the float32 sizes and output positions of
    one axis, and the module and scalar type to compute with. Both sizes Python ints: NumPy
    float32 (constants for the compiled backends; on eager ones a few conversions instead of
    ~15 small ops per axis and call); otherwise ``keras.ops`` on scalar tensors. The maths
    below is written once for both: the same float32 arithmetic."""
    if _is_static(in_size) and _is_static(out_size):
        return (np, np.float32, np.float32(in_size), np.float32(out_size),
                np.arange(out_size, dtype=np.float32))
    return (ops, float, ops.cast(in_size, "float32"), ops.cast(out_size, "float32"),
            ops.cast(ops.arange(0, out_size, 1, dtype="int32"), "float32"))


def _axis_interpolation(in_size, out_size, align_corners):
    """Source indices (int32) and blend weights (float32) for one axis."""
    xp, number, in_f, out_f, positions = _axis_grid(in_size, out_size)
    one = number(1)
    if align_corners:
        source = positions * ((in_f - one) / xp.maximum(out_f - one, one))
    else:
        half = number(0.5)
        source = xp.maximum((positions + half) * (in_f / out_f) - half, number(0))
    lower = xp.minimum(xp.floor(source), in_f - one)
    upper = xp.minimum(lower + one, in_f - one)
    weight = source - lower
    return ops.cast(lower, "int32"), ops.cast(upper, "int32"), weight


def _same_static_size(in_size, out_size):
    # Every mode maps output o to source o: the axis is left as it is (exactly).
    return _is_static(in_size) and _is_static(out_size) and in_size == out_size


def _interpolate_axis(x, in_size, out_size, axis, align_corners):
    if _same_static_size(in_size, out_size):
        return x
    lower, upper, weight = _axis_interpolation(in_size, out_size, align_corners)
    weight_shape = [1, 1, 1, 1]
    weight_shape[axis] = -1
    weight = ops.cast(ops.reshape(weight, weight_shape), x.dtype)
    x_lower = ops.take(x, lower, axis=axis)
    x_upper = ops.take(x, upper, axis=axis)
    return x_lower + (x_upper - x_lower) * weight


def _interpolate_axis_nearest(x, in_size, out_size, axis):
    # PyTorch "nearest": src = floor(o * n / m).
    if _same_static_size(in_size, out_size):
        return x
    xp, number, in_f, out_f, positions = _axis_grid(in_size, out_size)
    index = xp.minimum(xp.floor(positions * (in_f / out_f)), in_f - number(1))
    return ops.take(x, ops.cast(index, "int32"), axis=axis)


def resize(images, size, interpolation="bilinear", align_corners=False):
    """Resize ``(B, H, W, C)`` images to ``size = (height, width)`` (ints or scalar tensors).

    Works with symbolic/unknown input sizes on TensorFlow, JAX and PyTorch.
    """
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"resize: interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    if len(images.shape) != 4:
        raise ValueError(f"resize: expected a 4-D (B, H, W, C) tensor, got shape {images.shape}")
    in_h, in_w = _spatial_size(images)
    out_h, out_w = size
    x = images
    if interpolation == "nearest":
        x = _interpolate_axis_nearest(x, in_h, out_h, axis=1)
        return _interpolate_axis_nearest(x, in_w, out_w, axis=2)
    if keras.backend.backend() == "torch":
        return _torch_interpolate(x, (out_h, out_w), align_corners)
    return separable_bilinear(x, (in_h, in_w), (out_h, out_w), align_corners)


def separable_bilinear(images, in_size, out_size, align_corners):
    """The portable bilinear path (``keras.ops``; every backend but torch takes it):
    interpolate along H, then along W."""
    x = _interpolate_axis(images, in_size[0], out_size[0], 1, align_corners)
    return _interpolate_axis(x, in_size[1], out_size[1], 2, align_corners)


def _torch_interpolate(images, size, align_corners):
    """Backend adapter (PyTorch only), on purpose: the maths above *is* PyTorch's
    ``F.interpolate(mode="bilinear", align_corners=...)``, so on the torch backend we call it,
    on the NCHW view of the NHWC tensor (channels-last memory: the kernel reads and writes it
    without a copy). One kernel per call and one in the backward pass, where the gathers
    above take ~10 small operations per axis and an ``index_add`` each in the backward pass.
    Parity with the portable path: ``tests/test_package.py``."""
    import torch

    height, width = (int(keras.ops.convert_to_numpy(s)) if not _is_static(s) else s
                     for s in size)
    channels_first = keras.ops.convert_to_tensor(images).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(channels_first, size=(height, width),
                                              mode="bilinear", align_corners=align_corners)
    return resized.permute(0, 2, 3, 1)


def _spatial_size(x):
    """(H, W) as Python ints when static, else as scalar tensors."""
    static = x.shape
    dynamic = None
    sizes = []
    for axis in (1, 2):
        if static[axis] is not None:
            sizes.append(int(static[axis]))
        else:
            if dynamic is None:
                dynamic = ops.shape(x)
            sizes.append(dynamic[axis])
    return tuple(sizes)


def scaled_size(size, scale):
    """``max(1, floor(size * scale))``, the output size PyTorch computes for ``scale_factor``.

    The resize itself then maps coordinates by the size ratio, i.e. it equals
    ``F.interpolate(size=scaled_size(...))``.
    """
    if _is_static(size):
        return max(1, int(math.floor(size * scale)))
    scaled = ops.floor(ops.cast(size, "float32") * scale)
    return ops.cast(ops.maximum(scaled, 1.0), "int32")


@keras.saving.register_keras_serializable(package="keras_segattn")
class Resize(keras.layers.Layer):
    """Resize feature maps to a reference tensor's size or by a scale factor.

    Call as ``Resize()(x, reference)`` to match ``reference``'s height and width (e.g.
    logits to the input image), or ``Resize(scale=0.5)(x)`` for ``floor(H * 0.5)``.
    Unknown (``None``) sizes work on all backends, inside ``fit``/``predict`` and in
    SavedModel/TFLite export. The result matches PyTorch ``F.interpolate`` with the same
    ``align_corners``.

    Args:
        scale: float or ``None``. Scale factor used when no reference is given.
        interpolation: ``"bilinear"`` (default) or ``"nearest"``.
        align_corners: bool. Default ``False`` (mmsegmentation); ``True`` matches the
            official DANet/CCNet/ISANet/FLANet code.

    Example:
    >>> logits = keras.ops.ones((1, 8, 8, 19))
    >>> image = keras.ops.ones((1, 61, 45, 3))
    >>> tuple(Resize(align_corners=True)(logits, image).shape)
    (1, 61, 45, 19)
    """

    def __init__(self, scale=None, interpolation="bilinear", align_corners=False, **kwargs):
        super().__init__(**kwargs)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"Resize: interpolation must be 'bilinear' or 'nearest', got {interpolation!r}"
            )
        if scale is not None and not float(scale) > 0:
            raise ValueError(f"Resize: scale must be positive, got {scale!r}")
        self.scale = None if scale is None else float(scale)
        self.interpolation = interpolation
        self.align_corners = bool(align_corners)

    def _target_size(self, inputs, reference):
        if reference is not None:
            return _spatial_size(reference)
        if self.scale is None:
            raise ValueError("Resize: pass a reference tensor or construct with scale=...")
        in_h, in_w = _spatial_size(inputs)
        return scaled_size(in_h, self.scale), scaled_size(in_w, self.scale)

    def call(self, inputs, reference=None):
        size = self._target_size(inputs, reference)
        return resize(inputs, size, self.interpolation, self.align_corners)

    def compute_output_shape(self, inputs_shape, reference_shape=None):
        if reference_shape is not None:
            height, width = reference_shape[1], reference_shape[2]
        else:
            height, width = (
                None if size is None else max(1, int(math.floor(size * self.scale)))
                for size in inputs_shape[1:3]
            )
        return (inputs_shape[0], height, width, inputs_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(
            {"scale": self.scale, "interpolation": self.interpolation, "align_corners": self.align_corners}
        )
        return config

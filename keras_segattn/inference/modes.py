"""Whole-image, sliding-window and multi-scale (+ flip) prediction: ``predict_logits``.

mmsegmentation's test-time modes:

* ``"whole"``: one forward pass on the full image.
* ``"slide"``: a grid of ``crop_size`` windows with step ``stride``; the last window of each
  row/column is aligned to the image border (``y1 = max(min(y1 + crop, H) - crop, 0)``), the
  logits of overlapping windows are summed and divided by a count map, exactly like
  ``mmseg.models.segmentors.EncoderDecoder.slide_inference``. When the image is smaller
  than the crop, the window is the whole image; it is padded up to the crop size (and the
  logits cropped back) when the model needs a fixed input size, or with ``pad=True``.
* ``"multiscale"``: the image is resized by every factor in ``scales`` (optionally also
  flipped horizontally), run in ``whole`` or ``slide`` mode (``base_mode``), the outputs are
  resized back to the input size and averaged. Like mmseg's ``SegTTAModel`` the average is
  over softmax probabilities by default (``average="softmax"``); ``average="logits"``
  averages raw logits. ``flip=True`` also works with ``whole``/``slide``.
* ``scale=(long, short)`` (any mode): mmseg's test ``Resize(scale, keep_ratio=True)``: each
  image is first rescaled by ``min(long / max(H, W), short / min(H, W))`` (size rounded
  like ``mmcv.rescale_size``), and the multi-scale factors ``r`` rescale to
  ``(long * r, short * r)`` the same way (mmseg 0.x ``MultiScaleFlipAug`` with
  ``img_ratios``, the protocol of the published ms+flip results); the output is at the
  input size. This is how a preset's evaluation protocol runs
  (``keras_segattn.models.evaluation_protocol``).

Every resize of images or logits here is ``resize_logits`` (the package's PyTorch-exact
bilinear ``layers.resize.resize``), also used by ``keras_segattn.evaluation``.
"""

import math

import numpy as np

from keras_segattn import validation
from keras_segattn.common import INFERENCE_MODES, pair
from keras_segattn.inference.batching import fixed_input_size, forward

MODES = INFERENCE_MODES
DEFAULT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def resize_logits(array, size, interpolation="bilinear"):
    """Resize a ``(B, H, W, C)`` NumPy array (logits or images) to ``size = (H, W)`` with the
    package's PyTorch-exact resize (``align_corners=False``); float32 NumPy out."""
    import keras

    from keras_segattn.layers.resize import resize

    if tuple(array.shape[1:3]) == tuple(size):
        return array
    out = resize(keras.ops.convert_to_tensor(array.astype("float32")), tuple(int(s) for s in size), interpolation)
    return keras.ops.convert_to_numpy(out).astype("float32")


def keep_ratio_size(size, scale):
    """``(h, w)`` of an image of ``size = (H, W)`` rescaled to fit ``scale = (long, short)``
    keeping its aspect ratio: ``f = min(long / max(H, W), short / min(H, W))``, sides
    ``int(H * f + 0.5)`` (``mmcv.rescale_size``, mmseg's ``Resize(keep_ratio=True)``).

    >>> keep_ratio_size((512, 683), (2048, 512)), keep_ratio_size((1024, 2048), (1024, 512))
    ((512, 683), (512, 1024))
    """
    height, width = (int(s) for s in size)
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def softmax(x, axis=-1):
    """Numerically stable softmax of a NumPy array."""
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def check_images(images):
    """``(B, H, W, 3)`` float32 from a batch or a single ``(H, W, 3)`` image."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"predict_logits: expected RGB images of shape (B, H, W, 3) or (H, W, 3), got {images.shape}"
        )
    validation.check_image_array(images)  # NaN/Inf: one-line ValueError naming the image
    return images.astype("float32")


def slide_windows(image_size, crop_size, stride):
    """mmseg's sliding-window grid: a list of ``(y1, y2, x1, x2)`` boxes.

    ``h_grids = max(H - crop_h + stride_h - 1, 0) // stride_h + 1``; the last window of each
    axis is moved back so that it ends at the border. Windows are never larger than the
    image (an image smaller than the crop gives one window: the whole image).
    """
    height, width = image_size
    crop_h, crop_w = crop_size
    stride_h, stride_w = stride
    h_grids = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    w_grids = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    boxes = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * stride_h
            x1 = w_idx * stride_w
            y2 = min(y1 + crop_h, height)
            x2 = min(x1 + crop_w, width)
            y1 = max(y2 - crop_h, 0)
            x1 = max(x2 - crop_w, 0)
            boxes.append((y1, y2, x1, x2))
    return boxes


def _whole(model, images, fixed_size, pad_value):
    if fixed_size is not None and tuple(images.shape[1:3]) != tuple(fixed_size):
        # A fixed-size model (e.g. TFLite) on another size: slide with its size as crop.
        return _slide(model, images, fixed_size, fixed_size, None, True, pad_value)
    return forward(model, images)


def _slide(model, images, crop_size, stride, num_classes, pad, pad_value):
    batch, height, width, _ = images.shape
    crop_size = pair(crop_size, "crop_size", "predict_logits")
    stride = pair(stride, "stride", "predict_logits") or crop_size
    preds = None
    count = np.zeros((1, height, width, 1), "float32")
    for y1, y2, x1, x2 in slide_windows((height, width), crop_size, stride):
        crop = images[:, y1:y2, x1:x2, :]
        h, w = crop.shape[1:3]
        if pad and (h < crop_size[0] or w < crop_size[1]):
            crop = np.pad(
                crop,
                ((0, 0), (0, crop_size[0] - h), (0, crop_size[1] - w), (0, 0)),
                constant_values=pad_value,
            )
        logits = forward(model, crop)[:, :h, :w, :]
        if preds is None:
            channels = num_classes or logits.shape[-1]
            preds = np.zeros((batch, height, width, channels), "float32")
        preds[:, y1:y2, x1:x2, :] += logits
        count[:, y1:y2, x1:x2, :] += 1
    if (count == 0).any():  # pragma: no cover - the grid always covers the image
        raise RuntimeError("slide inference: some pixels were not covered by any window")
    return preds / count


def _check_stride(crop_size, stride):
    if crop_size is not None and stride is not None and (
            stride[0] > crop_size[0] or stride[1] > crop_size[1]):
        raise ValueError(f"predict_logits: stride {stride} is larger than crop_size "
                         f"{crop_size}: the windows would leave pixels out")


def check_options(mode="whole", crop_size=None, stride=None, scales=DEFAULT_SCALES):
    """The inference options of :func:`predict_logits` checked at once, before any image
    (``keras-segattn predict`` and ``evaluate`` fail in one line instead of on each image):
    the mode, positive window sizes, a stride no larger than the crop (mmseg's
    ``slide_inference`` asserts that every pixel is covered) and positive finite scales.
    Returns ``(crop_size, stride, factors)`` as pairs (or ``None``) and floats."""
    if mode not in MODES:
        raise ValueError(f"predict_logits: mode must be one of {MODES}, got {mode!r}")
    crop_size = pair(crop_size, "crop_size", "predict_logits")
    stride = pair(stride, "stride", "predict_logits")
    _check_stride(crop_size, stride)
    factors = (1.0,)
    if mode == "multiscale":
        try:
            factors = tuple(float(s) for s in scales)
        except (TypeError, ValueError):
            factors = ()
        if not factors or not all(math.isfinite(f) and f > 0 for f in factors):
            raise ValueError(f"predict_logits: scales must be positive finite numbers, got "
                             f"{scales!r}")
    return crop_size, stride, factors


def predict_logits(
    model,
    images,
    mode="whole",
    crop_size=None,
    stride=None,
    scales=DEFAULT_SCALES,
    flip=False,
    num_classes=None,
    average="softmax",
    base_mode=None,
    pad="auto",
    pad_value=0.0,
    scale=None,
):
    """Segmentation scores for ``images`` at input resolution.

    Args:
        model: a Keras model, a :class:`Predictor`, or a callable ``(B, H, W, 3)`` float32
            RGB in ``[0, 255]`` -> ``(B, H, W, C)`` logits.
        images: ``(B, H, W, 3)`` or ``(H, W, 3)`` array, RGB values in ``[0, 255]`` (the
            models normalise inside).
        mode: ``"whole"``, ``"slide"`` or ``"multiscale"``.
        crop_size: ``(h, w)`` or int, window size for ``"slide"`` (required there).
        stride: ``(h, w)`` or int, window step; defaults to ``crop_size`` (no overlap).
        scales: resize factors for ``"multiscale"`` (mmseg: 0.5 ... 1.75).
        flip: also run the horizontally flipped image and average (any mode).
        num_classes: number of output channels (inferred from the first output if ``None``).
        average: ``"softmax"`` (mmseg TTA: mean of probabilities) or ``"logits"``; only
            used when several predictions are averaged (multiscale and/or flip).
        base_mode: ``"whole"`` or ``"slide"``, how each scale is run in ``"multiscale"``
            (default: ``"slide"`` when ``crop_size`` is given, else ``"whole"``).
        pad: pad windows smaller than ``crop_size`` (image smaller than the crop) up to the
            crop. ``"auto"``: only if the model has a fixed input size.
        pad_value: raw pixel value used for padding.
        scale: ``None`` (predict at the input size) or ``(long, short)``: keep-ratio rescale
            of the images to that scale first (and to ``scale * r`` for the multi-scale
            factors ``r``), as mmseg's test pipeline (see the module docstring).

    Returns:
        float32 NumPy array ``(B, H, W, C)``: logits for a single prediction, the average
        of softmax probabilities (``average="softmax"``) or logits when several
        predictions are averaged. The argmax over the last axis is the class map.

    Example:
    >>> import keras
    >>> inp = keras.Input((None, None, 3))
    >>> model = keras.Model(inp, keras.layers.Conv2D(4, 1)(inp))
    >>> predict_logits(model, np.zeros((1, 20, 30, 3)), mode="slide", crop_size=16, stride=8).shape
    (1, 20, 30, 4)
    """
    crop_size, stride, factors = check_options(mode, crop_size, stride, scales)
    if average not in ("softmax", "logits"):
        raise ValueError(f"predict_logits: average must be 'softmax' or 'logits', got {average!r}")
    images = check_images(images)
    fixed_size = fixed_input_size(model)
    if mode == "slide" and crop_size is None:
        if fixed_size is None:
            raise ValueError("predict_logits: mode='slide' needs crop_size=(h, w) (and optionally stride)")
        crop_size = fixed_size
        _check_stride(crop_size, stride)
    if pad == "auto":
        pad = fixed_size is not None
    if base_mode is None:
        base_mode = "slide" if (mode == "slide" or crop_size is not None) else "whole"
    elif base_mode not in ("whole", "slide"):
        raise ValueError(f"predict_logits: base_mode must be 'whole' or 'slide', got {base_mode!r}")
    if base_mode == "slide" and crop_size is None:
        raise ValueError("predict_logits: base_mode='slide' needs crop_size")
    scale = pair(scale, "scale", "predict_logits")

    def run_one(batch):
        if base_mode == "slide" or mode == "slide":
            return _slide(model, batch, crop_size, stride or crop_size, num_classes, pad, pad_value)
        return _whole(model, batch, fixed_size, pad_value)

    height, width = images.shape[1:3]
    from keras_segattn.layers.resize import scaled_size

    flips = (False, True) if flip else (False,)
    several = len(factors) * len(flips) > 1

    total = None
    for factor in factors:
        if scale is not None:
            size = keep_ratio_size((height, width), (scale[0] * factor, scale[1] * factor))
        elif factor == 1.0:
            size = (height, width)
        else:
            size = (scaled_size(height, factor), scaled_size(width, factor))
        scaled = resize_logits(images, size)
        for flipped in flips:
            batch = scaled[:, :, ::-1, :] if flipped else scaled
            out = run_one(np.ascontiguousarray(batch))
            if flipped:
                out = out[:, :, ::-1, :]
            out = resize_logits(np.ascontiguousarray(out), (height, width))
            if several and average == "softmax":
                out = softmax(out)
            total = out if total is None else total + out
    if several:
        total = total / (len(factors) * len(flips))
    return total.astype("float32")

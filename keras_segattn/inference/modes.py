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

Every resize of images or logits here is ``resize_logits`` (the package's PyTorch-exact
bilinear ``layers.resize.resize``), also used by ``keras_segattn.evaluation``.
"""

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
    if mode not in MODES:
        raise ValueError(f"predict_logits: mode must be one of {MODES}, got {mode!r}")
    if average not in ("softmax", "logits"):
        raise ValueError(f"predict_logits: average must be 'softmax' or 'logits', got {average!r}")
    images = check_images(images)
    fixed_size = fixed_input_size(model)
    crop_size = pair(crop_size, "crop_size", "predict_logits")
    stride = pair(stride, "stride", "predict_logits")
    if mode == "slide" and crop_size is None:
        if fixed_size is None:
            raise ValueError("predict_logits: mode='slide' needs crop_size=(h, w) (and optionally stride)")
        crop_size = fixed_size
    if pad == "auto":
        pad = fixed_size is not None
    if base_mode is None:
        base_mode = "slide" if (mode == "slide" or crop_size is not None) else "whole"
    elif base_mode not in ("whole", "slide"):
        raise ValueError(f"predict_logits: base_mode must be 'whole' or 'slide', got {base_mode!r}")
    if base_mode == "slide" and crop_size is None:
        raise ValueError("predict_logits: base_mode='slide' needs crop_size")

    def run_one(batch):
        if base_mode == "slide" or mode == "slide":
            return _slide(model, batch, crop_size, stride or crop_size, num_classes, pad, pad_value)
        return _whole(model, batch, fixed_size, pad_value)

    height, width = images.shape[1:3]
    if mode == "multiscale":
        from keras_segattn.layers.resize import scaled_size

        factors = tuple(float(s) for s in scales)
        if not factors or min(factors) <= 0:
            raise ValueError(f"predict_logits: scales must be positive numbers, got {scales!r}")
    else:
        factors = (1.0,)
    flips = (False, True) if flip else (False,)
    several = len(factors) * len(flips) > 1

    total = None
    for factor in factors:
        if factor == 1.0:
            scaled = images
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

"""Segmentation metrics with mmsegmentation's definitions, and a dataset evaluation loop.

The numbers follow mmsegmentation's ``IoUMetric`` (``mmseg/evaluation/metrics/iou_metric.py``
@3d50cc3): pixels whose label is the ignore index (255) are dropped, the per-class
intersection / union / prediction / label areas are **summed over the whole dataset**, then

* ``aAcc = sum_c intersect_c / sum_c label_c``            (overall pixel accuracy)
* ``mIoU = nanmean_c(intersect_c / union_c)``             (classes with ``union_c == 0`` skipped)
* ``mAcc = nanmean_c(intersect_c / label_c)``             (classes absent from the labels skipped)

All three come from one ``num_classes x num_classes`` confusion matrix (rows = label,
columns = prediction), accumulated with NumPy so evaluation never depends on the backend.

Two ways to use them:

* :class:`ConfusionMatrix` (streaming over batches) + :func:`evaluate` (runs a model over a
  ``tf.data`` / iterable dataset with whole-image, sliding-window or multi-scale inference,
  returns :class:`EvaluationResult` with a printable per-class table).
* Keras metrics for ``compile(metrics=...)`` (``keras_segattn.metrics``, re-exported here):
  :class:`MeanIoU` (``keras.metrics.MeanIoU`` with a confusion matrix that is fast on every
  backend), :class:`MeanAccuracy` and :class:`PixelAccuracy` (mAcc / aAcc from the same
  confusion matrix).

Example:

>>> import numpy as np
>>> cm = ConfusionMatrix(num_classes=3)
>>> cm.update(np.array([[0, 1], [2, 255]]), np.array([[0, 1], [1, 0]]))
>>> round(cm.result()["aAcc"], 4)
0.6667
"""

import math
import time

import keras
import numpy as np

from keras_segattn import inference
from keras_segattn.common import IGNORE_INDEX, INFERENCE_MODES
# The Keras metrics live in keras_segattn.metrics; re-exported for compile(metrics=...).
from keras_segattn.metrics import (  # noqa: F401
    MeanAccuracy, MeanIoU, PixelAccuracy, segmentation_metrics,
)



def confusion_matrix(labels, predictions, num_classes, ignore_index=IGNORE_INDEX):
    """``(num_classes, num_classes)`` int64 counts, rows = label, columns = prediction.

    Pixels labelled ``ignore_index`` are dropped. Any other label outside
    ``[0, num_classes)`` is an error (a wrong ``num_classes`` or an unmapped label id would
    otherwise silently distort the metrics).
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    predictions = np.asarray(predictions).astype(np.int64).reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels and predictions must have the same number of pixels; got "
            f"{labels.size} labels and {predictions.size} predictions."
        )
    keep = labels != ignore_index
    labels, predictions = labels[keep], predictions[keep]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = np.unique(labels[(labels < 0) | (labels >= num_classes)])[:10]
        raise ValueError(
            f"label values {bad.tolist()} are outside [0, {num_classes}) and are not the "
            f"ignore index {ignore_index}. Check num_classes or map the labels (e.g. "
            f"Cityscapes labelIds -> trainIds)."
        )
    if predictions.size and (predictions.min() < 0 or predictions.max() >= num_classes):
        raise ValueError(
            f"predicted class ids must lie in [0, {num_classes}); got values in "
            f"[{predictions.min()}, {predictions.max()}]."
        )
    return np.bincount(
        labels * num_classes + predictions, minlength=num_classes * num_classes
    ).reshape(num_classes, num_classes)


def metrics_from_confusion_matrix(matrix):
    """mmseg's per-class and summary metrics from a confusion matrix.

    Returns a dict with ``aAcc``, ``mIoU``, ``mAcc`` (fractions in [0, 1], NaN when
    undefined) and per-class arrays ``IoU``, ``Acc`` (NaN for classes without union / label
    pixels) and ``label_area``.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    intersect = np.diag(matrix)
    area_label = matrix.sum(axis=1)
    area_pred = matrix.sum(axis=0)
    area_union = area_label + area_pred - intersect
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(area_union > 0, intersect / area_union, np.nan)
        acc = np.where(area_label > 0, intersect / area_label, np.nan)
    total = area_label.sum()
    return {
        "aAcc": float(intersect.sum() / total) if total > 0 else float("nan"),
        "mIoU": _nanmean(iou),
        "mAcc": _nanmean(acc),
        "IoU": iou,
        "Acc": acc,
        "label_area": area_label,
    }


def _nanmean(values):
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


class ConfusionMatrix:
    """Streaming confusion-matrix accumulator (NumPy).

    Args:
        num_classes: number of classes (labels ``0..num_classes-1``).
        ignore_index: label value excluded from every metric (default 255).

    Example:

    >>> cm = ConfusionMatrix(2)
    >>> cm.update([0, 0, 1, 1], [0, 1, 1, 1])
    >>> {k: round(cm.result()[k], 4) for k in ("mIoU", "mAcc", "aAcc")}
    {'mIoU': 0.5833, 'mAcc': 0.75, 'aAcc': 0.75}
    """

    def __init__(self, num_classes, ignore_index=IGNORE_INDEX):
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self):
        self.matrix[...] = 0

    def update(self, labels, predictions):
        """Add one batch. ``predictions`` are class ids with the labels' shape, or logits /
        probabilities with one extra trailing class axis (arg-maxed here)."""
        labels = np.asarray(labels)
        predictions = np.asarray(predictions)
        if predictions.ndim == labels.ndim + 1 or (
            predictions.ndim == labels.ndim
            and predictions.shape[-1] == self.num_classes
            and labels.shape[-1] == 1
        ):
            predictions = np.argmax(predictions, axis=-1)
        if labels.ndim == predictions.ndim + 1 and labels.shape[-1] == 1:
            labels = labels[..., 0]
        self.matrix += confusion_matrix(labels, predictions, self.num_classes, self.ignore_index)

    def merge(self, other):
        """Add another accumulator's counts (e.g. from another worker)."""
        self.matrix += np.asarray(other.matrix if isinstance(other, ConfusionMatrix) else other)

    def result(self):
        return metrics_from_confusion_matrix(self.matrix)


class EvaluationResult(dict):
    """``dict`` with ``mIoU``, ``mAcc``, ``aAcc`` (fractions), per-class ``IoU`` / ``Acc``,
    ``class_names``, ``confusion_matrix``, ``num_images``, ``seconds``; ``str()`` gives
    mmseg's per-class table plus the summary line (percentages, 2 decimals)."""

    def summary(self):
        return " ".join(f"{k}: {_pct(self[k])}" for k in ("mIoU", "mAcc", "aAcc"))

    def table(self):
        return format_table(self["IoU"], self["Acc"], self.get("class_names"))

    def __str__(self):
        return f"{self.table()}\n{self.summary()}"


def _pct(value):
    return "nan" if value is None or math.isnan(value) else f"{100.0 * value:.2f}"


def format_table(iou, acc, class_names=None):
    """Per-class IoU / Acc as a plain-text table (percentages, 2 decimals, like mmseg)."""
    num_classes = len(iou)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"got {len(names)} class names for {num_classes} classes.")
    rows = [(str(n), _pct(i), _pct(a)) for n, i, a in zip(names, iou, acc)]
    header = ("Class", "IoU", "Acc")
    widths = [max(len(r[c]) for r in rows + [header]) for c in range(3)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(row):
        cells = [f" {row[0]:<{widths[0]}} "] + [f" {v:>{w}} " for v, w in zip(row[1:], widths[1:])]
        return "|" + "|".join(cells) + "|"

    return "\n".join([line, fmt(header), line, *map(fmt, rows), line])


# --- Dataset evaluation ----------------------------------------------------------------------


def _split_batch(batch):
    """(images, labels) from a tuple/list batch or a dict batch."""
    if isinstance(batch, dict):
        for image_key in ("images", "image"):
            for label_key in ("segmentation_masks", "labels", "label", "mask"):
                if image_key in batch and label_key in batch:
                    return batch[image_key], batch[label_key]
        raise ValueError(
            f"dict batches need 'images' and 'segmentation_masks' keys; got {sorted(batch)}."
        )
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(
        "each dataset element must be (images, labels) or a dict with 'images' and "
        f"'segmentation_masks'; got {type(batch).__name__}."
    )


def _whole_inference(model, images):
    """Logits at the model's output resolution, one ``predict_on_batch``. Under JAX
    ``DataParallel`` the batch is sharded over the devices and, when its size does not
    divide by the device count, padded with copies of its last image whose rows are dropped
    again (:func:`keras_segattn.inference.predict_on_batch`, shared with the slide and
    multi-scale paths)."""
    return np.asarray(keras.ops.convert_to_numpy(
        inference.select_logits(inference.predict_on_batch(model, images))))


def _inference_fn(mode, crop_size, stride, scales, flip, scale=None):
    if mode not in INFERENCE_MODES:
        raise ValueError(f"unknown inference mode {mode!r}; choose from {list(INFERENCE_MODES)}.")
    if mode == "whole" and not flip and scale is None:
        return _whole_inference
    if mode == "slide" and crop_size is None:
        raise ValueError("mode='slide' needs crop_size=(height, width), e.g. (512, 1024).")
    inference.check_options(mode, crop_size, stride,
                            inference.DEFAULT_SCALES if scales is None else scales)
    kwargs = {"mode": mode, "crop_size": crop_size, "stride": stride, "flip": flip,
              "scale": scale}
    if mode == "multiscale" and scales is not None:
        kwargs["scales"] = tuple(scales)
    return lambda model, images: _to_numpy(inference.predict_logits(model, images, **kwargs))


def _to_numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(inference.select_logits(value)))


def evaluate(model, dataset, num_classes, class_names=None, mode="whole", crop_size=None,
             stride=None, scales=None, flip=False, ignore_index=IGNORE_INDEX, max_batches=None,
             verbose=False, scale=None):
    """Run ``model`` over ``dataset`` and return mmseg-style metrics.

    Args:
        model: a Keras model returning logits ``(B, h, w, num_classes)`` or a dict with a
            ``"logits"`` entry. Logits smaller than the labels (e.g. a model without a
            final upsampling) are bilinearly resized to the label size.
        dataset: iterable of ``(images, labels)`` or ``{"images", "segmentation_masks"}``
            batches (``tf.data.Dataset`` or NumPy); labels ``(B, H, W)`` or ``(B, H, W, 1)``
            with 255 = ignore. Partial last batches are fine on every backend.
        num_classes: number of classes.
        class_names: optional names for the per-class table.
        mode: ``"whole"`` (one forward pass per batch), ``"slide"`` (sliding window of
            ``crop_size`` with ``stride``) or ``"multiscale"`` (``scales`` x optional flip),
            the last two via :mod:`keras_segattn.inference`.
        crop_size, stride: window and step ``(h, w)`` for ``"slide"``.
        scales, flip: multi-scale ratios and horizontal-flip averaging.
        scale: ``None`` or ``(long, short)``: keep-ratio rescale of the images before
            inference (mmseg's test ``Resize``; see :func:`keras_segattn.inference.predict_logits`);
            the logits are resized back to the labels, which keep their size (mmseg
            evaluates at the original resolution). A batch is rescaled by the factor of its
            (padded) size: exact with batch size 1.
        ignore_index: label value excluded from the metrics.
        max_batches: stop after this many batches (quick checks).
        verbose: print progress every 50 batches.

    Returns:
        :class:`EvaluationResult`; ``print(result)`` shows the per-class table.
    """
    accumulator = ConfusionMatrix(num_classes, ignore_index)
    infer = _inference_fn(mode, crop_size, stride, scales, flip, scale)
    start, num_images = time.time(), 0
    for index, batch in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        images, labels = _split_batch(batch)
        images = np.asarray(keras.ops.convert_to_numpy(images))
        labels = np.asarray(keras.ops.convert_to_numpy(labels))
        if labels.ndim == 4:
            labels = labels[..., 0]
        logits = inference.resize_logits(infer(model, images), labels.shape[1:3])
        accumulator.update(labels, np.argmax(logits, axis=-1))
        num_images += images.shape[0]
        if verbose and (index + 1) % 50 == 0:
            print(f"evaluated {num_images} images", flush=True)
    if num_images == 0:
        raise ValueError("the evaluation dataset is empty.")
    metrics = accumulator.result()
    return EvaluationResult(
        mIoU=metrics["mIoU"], mAcc=metrics["mAcc"], aAcc=metrics["aAcc"],
        IoU=metrics["IoU"], Acc=metrics["Acc"],
        class_names=list(class_names) if class_names is not None else None,
        confusion_matrix=accumulator.matrix.copy(), num_images=num_images,
        seconds=time.time() - start,
    )

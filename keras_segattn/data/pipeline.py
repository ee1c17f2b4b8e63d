"""``make_pipeline``: batched (images, labels) tf.data pipelines for training and eval.

tf.data is the backend-neutral input path: ``model.fit`` / ``evaluate`` / ``predict``
accept a ``tf.data.Dataset`` on the TensorFlow, JAX and PyTorch backends alike, so the
same pipeline feeds every backend. The pipeline yields ``(images, labels)`` with images
float32 in [0, 255] ``(B, H, W, 3)`` (keras_segattn models normalise with the ImageNet
mean/std themselves) and labels int32 ``(B, H, W)`` in ``[0, num_classes)`` or 255
(ignore).
"""

import numpy as np
import tensorflow as tf

from keras_segattn.data import augment

IGNORE_LABEL = 255
AUTOTUNE = tf.data.AUTOTUNE


def _pair(value, what):
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) <= 0:
        raise ValueError(f"{what} must be a positive int or a (height, width) pair, got {value!r}.")
    return value


def _standardize(element):
    """dict {"image", "label"} or tuple (image, label) -> (float32 image, int32 (H, W) label)."""
    if isinstance(element, dict):
        if "image" not in element or "label" not in element:
            raise ValueError(
                "make_pipeline expects elements {'image': (H, W, 3), 'label': (H, W)} (as "
                f"returned by keras_segattn.data.load) or (image, label) tuples; got keys "
                f"{sorted(element)}."
            )
        image, label = element["image"], element["label"]
    elif isinstance(element, (tuple, list)) and len(element) == 2:
        image, label = element
    else:
        raise ValueError(
            "make_pipeline expects elements {'image', 'label'} or (image, label) tuples, "
            f"got {element!r}."
        )
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    if label.shape.rank == 3 and label.shape[-1] in (1, None):
        label = tf.squeeze(label, axis=-1)
    if label.shape.rank != 2 or image.shape.rank != 3 or image.shape[-1] not in (3, None):
        raise ValueError(
            "make_pipeline: each example must be an image (H, W, 3) and a label (H, W) or "
            f"(H, W, 1); got image {image.shape} and label {label.shape} (is the dataset "
            "already batched? pass the unbatched dataset)."
        )
    return tf.cast(image, tf.float32), tf.cast(label, tf.int32)


def _bad_label_mask(label, num_classes, ignore_label):
    return tf.logical_and(
        tf.logical_or(label < 0, label >= num_classes), tf.not_equal(label, ignore_label)
    )


def label_range_message(name, num_classes, ignore_label=IGNORE_LABEL):
    return (
        f"keras_segattn.data: dataset {name} has label values outside [0, {num_classes}) "
        f"that are not the ignore label {ignore_label}. Check num_classes and the label "
        "mapping (e.g. Cityscapes labelIds must be mapped to trainIds, ADE20K needs "
        "reduce_zero_label). Bad values:"
    )


def check_labels(label, num_classes, name="dataset", ignore_label=IGNORE_LABEL):
    """In-graph check for ``tf.data.map``: raise ``InvalidArgumentError`` on bad labels.

    The error message names the dataset and lists the offending values.
    """
    bad = _bad_label_mask(label, num_classes, ignore_label)
    assert_op = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [label_range_message(name, num_classes, ignore_label),
         tf.unique(tf.boolean_mask(tf.reshape(label, [-1]), tf.reshape(bad, [-1])))[0]],
        summarize=32,
    )
    with tf.control_dependencies([assert_op]):
        return tf.identity(label)


def validate_labels(dataset, num_classes, name="dataset", ignore_label=IGNORE_LABEL,
                    max_elements=None):
    """Eagerly scan ``dataset`` and raise ``ValueError`` if a label is out of range.

    Accepts the elements ``load`` returns (dicts with ``"label"``), ``(image, label)``
    tuples, batched or not. Valid labels are ``0 .. num_classes - 1`` and
    ``ignore_label``. Returns the number of elements checked.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensors({"image": np.zeros((2, 2, 3), "uint8"),
    ...                                    "label": np.array([[0, 1], [255, 7]], "uint8")})
    >>> validate_labels(ds, num_classes=3, name="toy")
    Traceback (most recent call last):
    ...
    ValueError: keras_segattn.data: dataset toy has label values outside [0, 3) ...
    """
    bad_values, bad_elements, count = set(), [], 0
    for element in dataset:
        if max_elements is not None and count >= max_elements:
            break
        label = element["label"] if isinstance(element, dict) else element[1]
        label = np.asarray(label).astype(np.int64)
        bad = ((label < 0) | (label >= num_classes)) & (label != ignore_label)
        if bad.any():
            bad_values.update(np.unique(label[bad]).tolist())
            bad_elements.append(count)
        count += 1
    if bad_values:
        raise ValueError(
            f"{label_range_message(name, num_classes, ignore_label)} {sorted(bad_values)} "
            f"(in elements {bad_elements[:10]}{' ...' if len(bad_elements) > 10 else ''})."
        )
    return count


def make_pipeline(dataset, training, crop_size=None, batch_size=8, *, scale=None,
                  ratio_range=None, cat_max_ratio=1.0, flip_prob=0.5, photometric=True,
                  eval_scale=None, eval_pad_size=None, num_classes=None, name="dataset",
                  ignore_label=IGNORE_LABEL, cache=False, shuffle_buffer=1000, seed=None,
                  drop_remainder=None, repeat=False, num_parallel_calls=AUTOTUNE):
    """Turn a dataset of examples into batched ``(images, labels)`` for ``fit``/``evaluate``.

    Training (``training=True``), mmseg's recipe: shuffle -> random rescale (ratio in
    ``ratio_range``; relative to ``scale=(long, short)`` if given, else to the image) ->
    random crop to ``crop_size`` (padding image 0 / label 255; ``cat_max_ratio`` like
    mmseg) -> horizontal flip -> photometric distortion -> batch (static shapes).

    Evaluation: optional ``eval_scale=(long, short)`` keep-ratio resize (label nearest),
    then optional ``eval_pad_size=(h, w)`` bottom/right padding (image 0, label 255; the
    image must fit) for static shapes. Without ``eval_pad_size`` images keep their size
    and batches are padded to the largest image of the batch (exact with batch 1).

    Args:
        dataset: unbatched ``tf.data.Dataset`` of ``{"image", "label"}`` dicts (from
            :func:`keras_segattn.data.load`) or ``(image, label)`` tuples.
        training: training (random augmentation, shuffling) or evaluation pipeline.
        crop_size: int or ``(height, width)``; required when ``training``.
        batch_size: examples per batch.
        scale, ratio_range, cat_max_ratio, flip_prob, photometric: training augmentation
            (see :mod:`keras_segattn.data.augment`). ``ratio_range=None`` uses
            ``dataset_info(name).ratio_range`` when ``name`` is a known dataset, else
            mmseg's ``(0.5, 2.0)``.
        eval_scale, eval_pad_size: evaluation resizing / padding.
        num_classes: if given, labels are checked in-graph: a value outside
            ``[0, num_classes)`` other than ``ignore_label`` raises
            ``InvalidArgumentError`` whose message names ``name`` and the bad values.
        name: dataset name used in error messages.
        ignore_label: label value of ignored pixels (255).
        cache: ``True`` caches decoded examples in memory, a string caches to that file.
        shuffle_buffer: shuffle buffer size (training only).
        seed: int seed for shuffling and augmentation; ``None`` = nondeterministic.
        drop_remainder: drop the last partial batch; defaults to ``training``.
        repeat: repeat forever (use with ``steps_per_epoch``).
        num_parallel_calls: parallelism of the map (``tf.data.AUTOTUNE``).

    Returns:
        A ``tf.data.Dataset`` of ``(images float32 (B, H, W, 3) in [0, 255],
        labels int32 (B, H, W))``, prefetched.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices(
    ...     {"image": np.zeros((4, 20, 30, 3), "uint8"), "label": np.ones((4, 20, 30), "uint8")})
    >>> train = make_pipeline(ds, training=True, crop_size=16, batch_size=2, seed=0)
    >>> images, labels = next(iter(train))
    >>> tuple(images.shape), labels.dtype.name
    ((2, 16, 16, 3), 'int32')
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"make_pipeline expects a tf.data.Dataset, got {type(dataset).__name__}.")
    crop_size = _pair(crop_size, "crop_size")
    eval_pad_size = _pair(eval_pad_size, "eval_pad_size")
    if training and crop_size is None:
        raise ValueError(
            "make_pipeline(training=True) needs crop_size, e.g. dataset_info(name).crop_size."
        )
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if drop_remainder is None:
        drop_remainder = bool(training)
    if ratio_range is None:
        from keras_segattn.data.info import DATASET_NAMES, dataset_info

        ratio_range = dataset_info(name).ratio_range if name in DATASET_NAMES else (0.5, 2.0)

    def standardize(*element):
        # tf.data unpacks tuple elements into positional arguments.
        image, label = _standardize(element[0] if len(element) == 1 else element)
        if num_classes is not None:
            label = check_labels(label, num_classes, name, ignore_label)
        return image, label

    ds = dataset.map(standardize, num_parallel_calls=num_parallel_calls)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")

    if training:
        if shuffle_buffer and shuffle_buffer > 1:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, seeds))

        def train_map(example, rand):
            image, label = example
            pair = tf.stack([rand, tf.bitwise.right_shift(rand, 32)])
            return augment.train_augment(
                image, label, pair, crop_size, scale=scale, ratio_range=ratio_range,
                cat_max_ratio=cat_max_ratio, flip_prob=flip_prob, photometric=photometric,
                ignore_label=ignore_label,
            )

        ds = ds.map(train_map, num_parallel_calls=num_parallel_calls)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
        def eval_map(image, label):
            if eval_scale is not None:
                image, label = augment.rescale_keep_ratio(image, label, eval_scale)
            if eval_pad_size is not None:
                shape = tf.shape(image)[:2]
                fits = tf.reduce_all(shape <= tf.constant(eval_pad_size))
                check = tf.debugging.Assert(fits, [
                    f"keras_segattn.data: an image of dataset {name} is larger than "
                    f"eval_pad_size={eval_pad_size}; set eval_scale to resize it first. "
                    "Image (height, width):", shape], summarize=4)
                with tf.control_dependencies([check]):
                    image, label = augment.pad_to_size(image, label, eval_pad_size, ignore_label)
                image = tf.ensure_shape(image, (*eval_pad_size, 3))
                label = tf.ensure_shape(label, eval_pad_size)
            return image, label

        ds = ds.map(eval_map, num_parallel_calls=num_parallel_calls)
        if repeat:
            ds = ds.repeat()
        if eval_pad_size is not None:
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        else:
            ds = ds.padded_batch(
                batch_size, padding_values=(0.0, ignore_label), drop_remainder=drop_remainder
            )
    return ds.prefetch(AUTOTUNE)

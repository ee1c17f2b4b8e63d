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

from keras_segattn import validation
from keras_segattn.common import pair
from keras_segattn.data import augment

from keras_segattn.common import IGNORE_INDEX as IGNORE_LABEL  # 255
AUTOTUNE = tf.data.AUTOTUNE


def _split_element(element):
    """dict {"image", "label"} or tuple (image, label) -> (image, label) as given."""
    if isinstance(element, dict):
        if "image" not in element or "label" not in element:
            raise ValueError(
                "make_pipeline expects elements {'image': (H, W, 3), 'label': (H, W)} (as "
                f"returned by keras_segattn.data.load) or (image, label) tuples; got keys "
                f"{sorted(element)}."
            )
        return element["image"], element["label"]
    if isinstance(element, (tuple, list)) and len(element) == 2:
        return element
    raise ValueError(
        "make_pipeline expects elements {'image', 'label'} or (image, label) tuples, "
        f"got {element!r}."
    )


def _check_shapes(image_shape, label_shape):
    label_rank = label_shape.rank
    if label_rank == 3 and label_shape[-1] in (1, None):
        label_rank = 2
    if label_rank != 2 or image_shape.rank != 3 or image_shape[-1] not in (3, None):
        raise ValueError(
            "make_pipeline: each example must be an image (H, W, 3) and a label (H, W) or "
            f"(H, W, 1); got image {image_shape} and label {label_shape} (is the dataset "
            "already batched? pass the unbatched dataset)."
        )


def _standardize(element):
    """dict {"image", "label"} or tuple (image, label) -> (image, int32 (H, W) label)."""
    image, label = _split_element(element)
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    _check_shapes(image.shape, label.shape)
    if label.shape.rank == 3:
        label = tf.squeeze(label, axis=-1)
    return image, tf.cast(label, tf.int32)


def _reject_float_labels(dataset, name):
    """Float labels would be truncated by the int32 cast (0.5 -> class 0): refuse them,
    naming a value of the first example (read only on the way to raising)."""
    spec = _split_element(dataset.element_spec)[1]
    if not spec.dtype.is_floating:
        return
    label = np.asarray(_split_element(next(iter(dataset.take(1))))[1]).reshape(-1)
    fractional = label[label != np.round(label)]
    value = fractional[0] if fractional.size else label[0]
    raise ValueError(validation.float_label_message(
        spec.dtype.name, value, f"in example 0 of dataset {name}"))


def check_labels(label, num_classes, name="dataset", ignore_label=IGNORE_LABEL, index=None):
    """In-graph check for ``tf.data.map``: ``label`` unchanged, or an ``InvalidArgumentError``
    carrying one line, ``label 7 in example 12 of dataset NAME is outside [0, K) and is not
    the ignore index 255`` (``index``: the example's position, a scalar tensor; the
    trainer and ``fit`` turn the error into that ``ValueError``, see
    :func:`keras_segattn.validation.one_line_errors`)."""
    where = f"in example {{}} of dataset {name}" if index is not None else f"in dataset {name}"
    return validation.tf_check_labels(label, num_classes, where, index, ignore_label)


def validate_labels(dataset, num_classes, name="dataset", ignore_label=IGNORE_LABEL,
                    max_elements=None):
    """Eagerly scan ``dataset`` and raise ``ValueError`` if a label is out of range.

    Accepts the elements ``load`` returns (dicts with ``"label"``), ``(image, label)``
    tuples, batched or not. Valid labels are ``0 .. num_classes - 1`` and
    ``ignore_label``. Returns the number of elements checked. The message names the first
    bad value and element, then every bad value found.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensors({"image": np.zeros((2, 2, 3), "uint8"),
    ...                                    "label": np.array([[0, 1], [255, 7]], "uint8")})
    >>> validate_labels(ds, num_classes=3, name="toy")
    Traceback (most recent call last):
    ...
    ValueError: label 7 in element 0 of dataset toy is outside [0, 3) and is not the ignore index 255 (bad values [7] in 1 element(s): [0])
    """
    bad_values, bad_elements, count, first = set(), [], 0, None
    for element in dataset:
        if max_elements is not None and count >= max_elements:
            break
        label = element["label"] if isinstance(element, dict) else element[1]
        label = np.asarray(label)
        if label.dtype.kind == "f":
            raise ValueError(validation.float_label_message(
                label.dtype, label.reshape(-1)[0], f"in element {count} of dataset {name}"))
        label = label.astype(np.int64)
        bad = ((label < 0) | (label >= num_classes)) & (label != ignore_label)
        if bad.any():
            if first is None:
                first = (int(label[bad][0]), count)
            bad_values.update(np.unique(label[bad]).tolist())
            bad_elements.append(count)
        count += 1
    if first is not None:
        message = validation.label_message(first[0], f"in element {first[1]} of dataset {name}",
                                           num_classes, ignore_label)
        raise ValueError(
            f"{message} (bad values {sorted(bad_values)} in {len(bad_elements)} element(s): "
            f"{bad_elements[:10]}{' ...' if len(bad_elements) > 10 else ''})"
        )
    return count


def _shuffled(ds, buffer, seed, epoch):
    """``ds`` shuffled with the seed pair ``(seed + 1, epoch)``, inside a ``flat_map``.

    ``Dataset.shuffle`` combines its op seed with the *graph-level* seed (TensorFlow's
    global seed where the pipeline is built). Setting the traced function's own graph seed
    makes the order a function of ``(seed, epoch)`` only, wherever and after whatever the
    pipeline is built; it also keeps the pair away from ``(0, 0)``, whose special case in
    TensorFlow's ``get_seed`` cannot take a tensor op seed."""
    tf.compat.v1.get_default_graph().seed = int(seed) % (2**31 - 2) + 1
    return ds.shuffle(buffer, seed=epoch, reshuffle_each_iteration=False) if buffer > 1 else ds


def _training_stream(ds, seed, shuffle_buffer, start_example, name):
    """The shuffled, endless stream of examples, starting at position ``start_example``.

    Epoch ``e`` is the dataset shuffled with the seed pair ``(seed, e)``, so position ``p``
    of the stream is the same whatever position the stream started from: starting at ``p``
    reads the examples before ``p`` of its own epoch only (``skip``; decoded, not
    augmented) and never replays earlier epochs.
    """
    size = int(ds.cardinality())
    buffer = int(shuffle_buffer or 1)
    if size == tf.data.INFINITE_CARDINALITY:  # one endless "epoch"
        stream = tf.data.Dataset.range(1).flat_map(lambda e: _shuffled(ds, buffer, seed, e))
        return stream.skip(start_example)
    if size == tf.data.UNKNOWN_CARDINALITY:
        size = int(ds.reduce(np.int64(0), lambda n, _: n + 1))  # one pass (fills a cache)
    if size == 0:
        raise ValueError(f"make_pipeline: dataset {name} is empty.")
    first_epoch, offset = divmod(int(start_example), size)
    buffer = min(buffer, size)
    epochs = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
    return epochs.flat_map(lambda e: _shuffled(ds, buffer, seed, e)).skip(offset)


def _check_augmentation(ratio_range, cat_max_ratio, flip_prob):
    """One-line errors for augmentation settings that would draw nonsense (a reversed or NaN
    ratio range fed ``tf.random.uniform`` as is) or do nothing meant."""
    number = validation.is_finite_number
    try:
        low, high = ratio_range
    except (TypeError, ValueError):
        low = high = None
    if not (number(low) and number(high) and 0 < low <= high):
        raise ValueError("make_pipeline: ratio_range must be (low, high) with 0 < low <= high; "
                         f"got {ratio_range!r}.")
    if not (number(cat_max_ratio) and 0 < cat_max_ratio <= 1):
        raise ValueError(f"make_pipeline: cat_max_ratio must be in (0, 1] (1: no limit); got "
                         f"{cat_max_ratio!r}.")
    if not (number(flip_prob) and 0 <= flip_prob <= 1):
        raise ValueError(f"make_pipeline: flip_prob must be in [0, 1]; got {flip_prob!r}.")


def make_pipeline(dataset, training, crop_size=None, batch_size=8, *, scale=None,
                  ratio_range=None, cat_max_ratio=1.0, flip_prob=0.5, photometric=True,
                  eval_scale=None, eval_pad_size=None, num_classes=None, name="dataset",
                  ignore_label=IGNORE_LABEL, cache=False, shuffle_buffer=1000, seed=None,
                  drop_remainder=None, repeat=False, start_batch=0,
                  num_parallel_calls=AUTOTUNE):
    """Turn a dataset of examples into batched ``(images, labels)`` for ``fit``/``evaluate``.

    Training (``training=True``), mmseg's recipe: shuffle -> random rescale (ratio in
    ``ratio_range``; relative to ``scale=(long, short)`` if given, else to the image) ->
    random crop to ``crop_size`` (padding image 0 / label 255; ``cat_max_ratio`` like
    mmseg) -> horizontal flip -> photometric distortion -> batch (static shapes).

    An endless training pipeline (``repeat=True``) is a pure function of the batch index:
    epoch ``e`` is the dataset shuffled with a seed derived from ``(seed, e)``, and the
    example at position ``p`` of the stream is augmented with the stateless seed
    ``(seed, p)``. ``start_batch=N`` therefore yields exactly the batches ``N, N+1, ...``
    that the same pipeline yields after ``N`` batches from the start; it reads (decodes, but
    does not augment) at most one epoch of examples to get there. This is how a resumed
    training run continues with the data and augmentation draws it would have seen.

    Evaluation: optional ``eval_scale=(long, short)`` keep-ratio resize (label nearest),
    then optional ``eval_pad_size=(h, w)`` bottom/right padding (image 0, label 255; the
    image must fit) for static shapes. Without ``eval_pad_size`` images keep their size
    and batches are padded to the largest image of the batch (exact with batch 1).

    Every example is checked as it is read (in the graph; see
    :mod:`keras_segattn.validation`): float images must be finite, labels must be
    integers and, with ``num_classes``, in ``[0, num_classes)`` or ``ignore_label``. A
    failure names the value and the example (``label 7 in example 12 of dataset NAME is
    outside [0, 5) and is not the ignore index 255``); ``fit``, ``evaluate`` and the trainer
    raise it as that one-line ``ValueError`` (iterating the dataset yourself gives
    TensorFlow's ``InvalidArgumentError`` containing the line). Float labels fail at once.

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
        num_classes: if given, labels are checked against ``[0, num_classes)``.
        name: dataset name used in error messages.
        ignore_label: label value of ignored pixels (255).
        cache: ``True`` caches decoded examples in memory, a string caches to that file.
        shuffle_buffer: shuffle buffer size (training only).
        seed: int seed for shuffling and augmentation; ``None`` = a random one.
        drop_remainder: drop the last partial batch; defaults to ``training``.
        repeat: repeat forever (use with ``steps_per_epoch``).
        start_batch: first batch of an endless training pipeline (``repeat=True``; needs
            ``seed``), see above.
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
    crop_size = pair(crop_size, "crop_size", "make_pipeline")
    eval_pad_size = pair(eval_pad_size, "eval_pad_size", "make_pipeline")
    if training and crop_size is None:
        raise ValueError(
            "make_pipeline(training=True) needs crop_size, e.g. dataset_info(name).crop_size."
        )
    validation.check_positive_int(batch_size, "batch_size")
    if num_classes is not None:
        validation.check_positive_int(num_classes, "num_classes")
    if isinstance(start_batch, bool) or not isinstance(start_batch, (int, np.integer)) \
            or start_batch < 0:
        raise ValueError(f"start_batch must be an integer >= 0; got {start_batch!r}.")
    if start_batch and not (training and repeat):
        raise ValueError("start_batch needs an endless training pipeline (training=True, "
                         "repeat=True).")
    if start_batch and seed is None:
        raise ValueError("start_batch needs a seed: without one the stream is not reproducible.")
    if drop_remainder is None:
        drop_remainder = bool(training)
    if ratio_range is None:
        from keras_segattn.data.info import DATASET_NAMES, dataset_info

        ratio_range = dataset_info(name).ratio_range if name in DATASET_NAMES else (0.5, 2.0)
    if training:
        _check_augmentation(ratio_range, cat_max_ratio, flip_prob)
    image_spec, label_spec = _split_element(dataset.element_spec)  # errors now, not in the graph
    _check_shapes(image_spec.shape, label_spec.shape)
    _reject_float_labels(dataset, name)
    where = f"in example {{}} of dataset {name}"

    def standardize(index, element):
        image, label = _standardize(element)
        image = validation.tf_check_images(image, where, index)
        if num_classes is not None:
            label = check_labels(label, num_classes, name, ignore_label, index)
        return tf.cast(image, tf.float32), label

    ds = dataset.enumerate().map(standardize, num_parallel_calls=num_parallel_calls)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")

    if training:
        if repeat:
            if seed is None:
                seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
            start = int(start_batch) * int(batch_size)
            stream = _training_stream(ds, seed, shuffle_buffer, start, name)
            positions = tf.data.Dataset.range(start, np.iinfo(np.int64).max)
            ds = tf.data.Dataset.zip((stream, positions))

            def draw(position):
                return tf.stack([tf.constant(seed, tf.int64), position])
        else:
            if shuffle_buffer and shuffle_buffer > 1:
                ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
            ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(
                seed=seed, rerandomize_each_iteration=True)))

            def draw(rand):
                return tf.stack([rand, tf.bitwise.right_shift(rand, 32)])

        def train_map(example, rand):
            image, label = example
            return augment.train_augment(
                image, label, draw(rand), crop_size, scale=scale, ratio_range=ratio_range,
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
    ds = ds.prefetch(AUTOTUNE)
    return validation.mark_checked(ds) if num_classes is not None else ds

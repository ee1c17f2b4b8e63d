"""Checks of what enters keras_segattn: labels, images, run arguments and files.

Every check fails with a ``ValueError`` (``TypeError`` for a wrong kind of value) whose
message is one line that names the value, where it was found and, where there is one, the
fix, e.g. ``label 7 at batch 3 is outside [0, 3) and is not the ignore index 255``.

Where they run:

* ``keras_segattn.data.make_pipeline``: every example, in the ``tf.data`` graph
  (:func:`tf_check_labels`, :func:`tf_check_images`), so a bad label or a NaN pixel names the
  example it came from.
* ``fit`` / ``evaluate`` / ``predict`` of the models (:func:`checked_data`,
  :func:`checked_images`, :func:`one_line_errors`): NumPy inputs are checked once, before
  Keras sees them (values, and shapes: a batch of images with the model's channels, one
  label per pixel); a ``tf.data.Dataset`` gets the shape checks its element spec allows at
  once and the value checks per batch, in its own graph, i.e. on the input-pipeline threads
  that overlap with the training step. Other inputs
  (``keras.utils.PyDataset``, generators, a torch ``DataLoader``) are passed on unchecked.
* the trainer and the command line: :func:`check_output_dir`, :func:`check_keras_file`.

An in-graph check raises TensorFlow's ``InvalidArgumentError`` with the message between
markers; :func:`one_line_errors` turns that error, wherever it surfaces (inside a
``tf.function`` on TensorFlow, from the dataset iterator on JAX and PyTorch), into
``ValueError(message)`` without the backend traceback.
"""

import contextlib
import errno
import math
import numbers
import os
import re
import zipfile

import numpy as np

from keras_segattn.common import IGNORE_INDEX  # the label value losses and metrics skip (255)

_START, _END = "<<keras_segattn: ", " >>"
_MESSAGE = re.compile(re.escape(_START) + "(.*?)" + re.escape(_END), re.S)
# Examples per NumPy chunk: bounds the temporary masks of a large array check.
_CHUNK = 64
# Attribute set on datasets whose examples were already checked (make_pipeline's output), so
# the fit / evaluate hook does not check every batch a second time.
_CHECKED = "_keras_segattn_checked"


# --- messages -------------------------------------------------------------------------


def label_message(value, where, num_classes, ignore_index=IGNORE_INDEX):
    """``"label 7 at batch 3 is outside [0, 3) and is not the ignore index 255"``."""
    return (f"label {value} {where} is outside [0, {num_classes}) and is not the ignore "
            f"index {ignore_index}")


def float_label_message(dtype, value, where):
    """``"label 0.5 at batch 0 is a float32 value; class indices must be integers ..."``."""
    return (f"label {float(value)} {where} is a {dtype} value; class indices must be "
            f"integers 0..K-1 (or the ignore index {IGNORE_INDEX}): cast whole-number labels "
            "to int32 and map fractional ones to classes first")


def image_message(where, nan_count, inf_count, total):
    """``"images at batch 1 contain 3 NaN and 0 Inf values (of 192) ..."``."""
    return (f"images {where} contain {nan_count} NaN and {inf_count} Inf values (of {total}); "
            "they must be finite RGB values in [0, 255]")


# --- NumPy checks (once, before Keras sees the data) -------------------------------------


def _where(index, batch_size):
    if batch_size:
        return f"at batch {index // batch_size} (example {index})"
    return f"in example {index}"


def check_label_array(labels, num_classes, batch_size=None, ignore_index=IGNORE_INDEX):
    """Raise ``ValueError`` unless ``labels`` (examples on the first axis) are integers in
    ``[0, num_classes)`` or ``ignore_index``. ``batch_size`` (as ``fit`` batches them) makes
    the message name the batch."""
    labels = np.asarray(labels)
    if labels.ndim == 0:
        labels = labels[None]
    if labels.dtype.kind == "f":
        flat = labels.reshape(len(labels), -1)
        fractional = flat != np.round(flat)
        row = int(np.argmax(fractional.any(axis=1))) if fractional.any() else 0
        value = flat[row][fractional[row]][0] if fractional.any() else flat[0, 0]
        raise ValueError(float_label_message(labels.dtype, value, _where(row, batch_size)))
    if labels.dtype.kind not in "iub":
        raise TypeError(f"labels must be integer class indices; got dtype {labels.dtype}.")
    for start in range(0, len(labels), _CHUNK):
        chunk = labels[start:start + _CHUNK].astype(np.int64)
        bad = ((chunk < 0) | (chunk >= num_classes)) & (chunk != ignore_index)
        if bad.any():
            offset = int(np.argmax(bad.reshape(len(chunk), -1).any(axis=1)))
            value = int(chunk[offset][bad[offset]][0])
            raise ValueError(label_message(value, _where(start + offset, batch_size),
                                           num_classes, ignore_index))


def check_image_array(images, batch_size=None):
    """Raise ``ValueError`` if a float ``images`` array holds NaN or Inf (integer images are
    always finite: nothing to do)."""
    images = np.asarray(images)
    if images.dtype.kind not in "fc":
        return
    if images.ndim == 0:
        images = images[None]
    for start in range(0, len(images), _CHUNK):
        finite = np.isfinite(images[start:start + _CHUNK])
        if not finite.all():
            offset = int(np.argmin(finite.reshape(len(finite), -1).all(axis=1)))
            example = images[start + offset]
            raise ValueError(image_message(
                _where(start + offset, batch_size), int(np.isnan(example).sum()),
                int(np.isinf(example).sum()), example.size))


def check_image_shape(shape, channels=3, dataset=False):
    """Raise ``ValueError`` unless ``shape`` (``None`` for an unknown size) is a batch of
    images, ``(batch, height, width, channels)``. ``dataset``: the shape of a dataset's
    batches (the hint says to batch it, not to add an axis)."""
    shape = tuple(None if size is None else int(size) for size in shape)
    if len(shape) != 4:
        hint = ""
        if len(shape) == 3:
            hint = (": batch the dataset (dataset.batch(n))" if dataset
                    else ": one image needs a batch axis, images[None]")
        raise ValueError(f"images must be a batch of shape (batch, height, width, {channels}); "
                         f"got shape {shape}{hint}.")
    if shape[0] == 0:
        raise ValueError(f"images are an empty batch (shape {shape}).")
    if channels is not None and shape[-1] is not None and shape[-1] != channels:
        hint = ", e.g. np.repeat(gray, 3, axis=-1)" if shape[-1] == 1 and channels == 3 else ""
        noun = "channel" if shape[-1] == 1 else "channels"
        raise ValueError(f"images have {shape[-1]} {noun} (shape {shape}); the model takes "
                         f"{channels}{hint}.")


def check_label_shape(label_shape, image_shape):
    """Raise ``ValueError`` unless labels of ``label_shape`` give one class index per pixel of
    images of ``image_shape``: ``(batch, height, width)`` or ``(batch, height, width, 1)``
    (``None`` sizes are not compared)."""
    label_shape = tuple(None if size is None else int(size) for size in label_shape)
    image_shape = tuple(None if size is None else int(size) for size in image_shape)
    per_pixel = label_shape[:3] if len(label_shape) == 4 and label_shape[3] == 1 else label_shape
    if len(per_pixel) != 3 or any(
            a is not None and b is not None and a != b
            for a, b in zip(per_pixel, image_shape[:3])):
        raise ValueError(
            f"labels of shape {label_shape} do not fit images of shape {image_shape}: one class "
            "index per pixel, shape (batch, height, width) or (batch, height, width, 1).")


# --- in-graph checks (tf.data) -------------------------------------------------------------


def _tf_fail_if(failed, message_fn, value):
    """``value``, or an ``InvalidArgumentError`` carrying ``message_fn()`` when ``failed``.

    The message is only built when the check fails (``tf.cond``), so a passing check costs one
    reduction."""
    import tensorflow as tf

    def fail():
        message = tf.strings.join([_START, message_fn(), _END])
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.identity(value)

    return tf.cond(failed, fail, lambda: tf.identity(value))


def _format(template, *values):
    import tensorflow as tf

    return tf.strings.format(template, tuple(values))


def tf_check_labels(labels, num_classes, where, index=None, ignore_index=IGNORE_INDEX):
    """In-graph label check for ``tf.data`` (integer ``labels``).

    ``where`` describes the position, with ``{}`` replaced by ``index`` (a scalar tensor),
    e.g. ``where="at batch {}"``. Returns ``labels``; fails with the one-line message of
    :func:`label_message`."""
    import tensorflow as tf

    labels = tf.convert_to_tensor(labels)
    wide = tf.cast(labels, tf.int64)
    bad = tf.logical_and(tf.logical_or(wide < 0, wide >= num_classes),
                         tf.not_equal(wide, ignore_index))

    def message():
        value = tf.boolean_mask(wide, bad)[0]
        text = label_message("{}", where, num_classes, ignore_index)
        return _format(text, value, *(() if index is None else (index,)))

    return _tf_fail_if(tf.reduce_any(bad), message, labels)


def tf_check_images(images, where, index=None):
    """In-graph NaN/Inf check of a float image tensor (integer images pass untouched)."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        return images

    def message():
        count = lambda mask: tf.reduce_sum(tf.cast(mask, tf.int64))  # noqa: E731
        text = image_message(where, "{}", "{}", "{}")
        return _format(text, *(() if index is None else (index,)),
                       count(tf.math.is_nan(images)), count(tf.math.is_inf(images)),
                       tf.size(images, out_type=tf.int64))

    return _tf_fail_if(tf.logical_not(tf.reduce_all(tf.math.is_finite(images))), message, images)


def mark_checked(dataset):
    """Record that ``dataset``'s examples were checked (by ``make_pipeline``)."""
    setattr(dataset, _CHECKED, True)
    return dataset


def _float_label_error(dataset, getter, dtype):
    """The one-line error for a dataset whose labels are float; reads one batch to name a
    value (only on the way to raising)."""
    labels = np.asarray(getter(next(iter(dataset.take(1))))).reshape(-1)
    fractional = labels[labels != np.round(labels)]
    value = fractional[0] if fractional.size else labels[0]
    return ValueError(float_label_message(dtype, value, "at batch 0"))


def _label_paths(element_spec):
    """Ways to reach the label tensors of a batched element: ``[(getter, dtype), ...]``."""
    if not isinstance(element_spec, tuple) or len(element_spec) < 2:
        return []
    y = element_spec[1]
    if isinstance(y, dict):
        return [(lambda e, k=k: e[1][k], spec.dtype) for k, spec in y.items()]
    return [(lambda e: e[1], y.dtype)] if y is not None else []


def checked_dataset(dataset, num_classes=None, ignore_index=IGNORE_INDEX, channels=3):
    """``dataset`` (batched ``x`` or ``(x, y[, sample_weight])``) with the label and image
    checks added in its graph (``where`` = ``at batch <n>``). Float labels and the shapes its
    element spec knows (:func:`check_image_shape`, :func:`check_label_shape`) fail here, at
    once."""
    import tensorflow as tf

    if getattr(dataset, _CHECKED, False):
        return dataset
    spec = dataset.element_spec
    image_spec = spec[0] if isinstance(spec, tuple) else spec
    if isinstance(image_spec, tf.TensorSpec) and image_spec.shape.rank is not None:
        check_image_shape(image_spec.shape, channels, dataset=True)
        label_spec = spec[1] if isinstance(spec, tuple) and len(spec) > 1 else None
        if (num_classes is not None and isinstance(label_spec, tf.TensorSpec)
                and label_spec.shape.rank is not None):
            check_label_shape(label_spec.shape, image_spec.shape)
    paths = _label_paths(spec) if num_classes is not None else []
    for getter, dtype in paths:
        if dtype.is_floating:
            raise _float_label_error(dataset, getter, dtype.name)

    def check(index, element):
        if isinstance(element, tuple):
            x, rest = element[0], list(element[1:])
        else:
            x, rest = element, None
        x = tf.nest.map_structure(lambda t: tf_check_images(t, "at batch {}", index), x)
        if rest is None:
            return x
        if num_classes is not None and rest and rest[0] is not None:
            rest[0] = tf.nest.map_structure(
                lambda t: tf_check_labels(t, num_classes, "at batch {}", index, ignore_index),
                rest[0])
        return (x, *rest)

    checked = dataset.enumerate().map(check, num_parallel_calls=tf.data.AUTOTUNE,
                                      deterministic=True)
    return mark_checked(checked)


def _is_array(value):
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__array__"))


def _is_tf_dataset(value):
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - TensorFlow is a dependency
        return False
    return isinstance(value, tf.data.Dataset)


def checked_data(x, y, num_classes, batch_size=None, ignore_index=IGNORE_INDEX, channels=3):
    """The ``(x, y)`` of ``fit`` / ``evaluate``, checked.

    NumPy/tensor ``x`` and ``y`` (or dicts of them) are checked at once (``batch_size``
    as Keras will batch them, default 32): values, and the shapes of an image array and its
    label array; a ``tf.data.Dataset`` ``x`` comes back wrapped with per-batch in-graph
    checks; anything else is returned as it is."""
    if _is_tf_dataset(x):
        return checked_dataset(x, num_classes, ignore_index, channels), y
    if _is_array(x):
        check_image_shape(x.shape, channels)
        if y is not None and _is_array(y):
            check_label_shape(y.shape, x.shape)
    size = batch_size or 32
    for value in (x.values() if isinstance(x, dict) else [x]):
        if _is_array(value):
            check_image_array(value, size)
    if y is not None and num_classes is not None:
        for value in (y.values() if isinstance(y, dict) else [y]):
            if _is_array(value):
                check_label_array(value, num_classes, size, ignore_index)
    return x, y


def checked_validation_data(validation_data, num_classes, batch_size=None, channels=3):
    """``fit(validation_data=...)``: a dataset or an ``(x, y[, sample_weight])`` tuple."""
    if _is_tf_dataset(validation_data):
        return checked_dataset(validation_data, num_classes, channels=channels)
    if isinstance(validation_data, (tuple, list)) and len(validation_data) >= 2:
        checked_data(validation_data[0], validation_data[1], num_classes, batch_size,
                     channels=channels)
    return validation_data


def checked_images(x, batch_size=None, channels=3):
    """The ``x`` of ``predict``: arrays checked at once (shape, NaN/Inf), datasets wrapped."""
    if _is_tf_dataset(x):
        return checked_dataset(x, channels=channels)
    if _is_array(x):
        check_image_shape(x.shape, channels)
    for value in (x.values() if isinstance(x, dict) else [x]):
        if _is_array(value):
            check_image_array(value, batch_size or 32)
    return x


def check_message(error):
    """The one-line message of an in-graph check inside ``error`` (any exception), or None."""
    match = _MESSAGE.search(str(error))
    return match.group(1) if match else None


@contextlib.contextmanager
def one_line_errors(model=None, keep_values=None):
    """Re-raise a failed in-graph check as ``ValueError(<its one line>)``, without the
    backend's traceback and tensor dumps; other errors pass through unchanged.

    ``model`` and ``keep_values`` (JAX only, :func:`entry_values`): Keras' JAX trainer
    detaches the variable values while ``fit`` / ``evaluate`` / ``predict`` run and
    re-attaches them at the end; on an error only ``fit`` re-attaches them. Without help the
    model is unusable after a failed call: ``'NoneType' object is not callable`` when the
    first batch failed, ``Array has been deleted`` when a later batch of ``evaluate`` /
    ``predict`` failed (its compiled steps consumed the values). On failure this puts back
    the values at entry (``keep_values``) if they are still there, else attaches the state
    of the last batch that ran (``model.jax_state_sync()``). ``fit`` clears
    ``keep_values`` after its first batch, as from then on Keras re-attaches its state
    itself (the steps taken are kept). The same after any error, ``KeyboardInterrupt``
    included."""
    try:
        yield
    except BaseException as error:  # only errors carrying our marker are replaced
        if model is not None and keep_values:  # also after Ctrl-C
            _reattach_jax_state(model, keep_values)
        message = check_message(error) if isinstance(error, Exception) else None
        if message is None:
            raise
        raise ValueError(message) from None


def _reattach_jax_state(model, keep_values):
    """After a failed JAX ``fit`` (first batch) / ``evaluate`` / ``predict``: the entry
    values, or the last batch's state if a compiled step consumed (donated) them."""
    if any(getattr(value, "is_deleted", lambda: False)() for value in keep_values.values()):
        model.jax_state_sync()
        return
    for variable in model.variables:
        if id(variable) in keep_values:
            variable.assign(keep_values[id(variable)])


def entry_values(model):
    """``{id(variable): value}`` of ``model`` on the JAX backend (see :func:`one_line_errors`),
    else ``{}``. Holds references, no copies."""
    import keras

    if model is None or keras.backend.backend() != "jax":
        return {}
    return {id(v): v.value for v in model.variables}


# --- arguments, folders and files -------------------------------------------------------------


def is_finite_number(value):
    """A real number (not a bool) that is neither NaN nor infinite."""
    return (not isinstance(value, bool) and isinstance(value, numbers.Real)
            and math.isfinite(value))


def check_finite(value, name):
    """``value`` if it is a finite number, else a one-line ``ValueError`` naming ``name``
    (a NaN learning rate trains a NaN model without a word)."""
    if not is_finite_number(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}.")
    return value


def check_positive_int(value, name, allow_none=False):
    """``value`` as an ``int >= 1`` (``None`` if allowed), else a one-line ``ValueError``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def check_output_dir(path, what="output_dir", create=True):
    """The absolute ``path`` of a folder that exists and is writable, or can be made (with
    its parents) where nothing stands in the way: else a one-line ``ValueError`` (a parent
    that is a regular file, no permission, a read-only or full disk). ``create=False`` checks
    without making it (the trainer makes it with its first file, so a run that fails while
    it is set up leaves no empty folder)."""
    path = os.path.abspath(os.fspath(path))
    parent = path
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
    if parent and not os.path.isdir(parent):
        raise ValueError(f"{what} {path!r} cannot be created: {parent!r} is a file, not a "
                         "folder; choose another path.")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{what} {path!r} cannot be created: "
                         f"{error.strerror or error}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path!r} is not writable.")
    if not create:  # made to be sure it can be: remove what was made
        made = path
        while made != parent:
            os.rmdir(made)
            made = os.path.dirname(made)
    return path


def check_keras_file(path, what="model file"):
    """Fail in one line unless ``path`` is a readable, complete ``.keras`` archive (a zip
    with ``config.json``): not found, a folder, empty, truncated or not a ``.keras`` file.
    Keras reports a truncated file as "File not found"."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{what} {path!r} does not exist.")
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder, not a .keras file.")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"{what} {path!r} is empty (0 bytes): the save that wrote it did not "
                         "finish; use an earlier checkpoint or save the model again.")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()
    except zipfile.BadZipFile:
        raise ValueError(f"{what} {path!r} ({size} bytes) is not a complete .keras archive "
                         "(truncated or corrupt); use an earlier checkpoint or save the model "
                         "again.") from None
    except OSError as error:
        raise ValueError(f"{what} {path!r} cannot be read: {error.strerror or error}.") from None
    if damaged is not None:
        raise ValueError(f"{what} {path!r} is corrupt (member {damaged!r} fails its CRC check); "
                         "use an earlier checkpoint or save the model again.")
    if "config.json" not in names:
        raise ValueError(f"{what} {path!r} is a zip archive but not a .keras model "
                         "(no config.json inside).")
    return path


def is_disk_full(error):
    """True for ``OSError`` ENOSPC / EDQUOT (no space left, quota exceeded)."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)

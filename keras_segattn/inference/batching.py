"""Running a model on one batch: main-output selection, device sharding, padding.

* ``select_logits(outputs)``: the main logits of a model's outputs (a tensor, a list, or a
  dict with ``"logits"``).
* ``forward(model, batch)``: float32 NumPy logits of a Keras model / ``Predictor`` /
  callable on a float32 NumPy batch (sharded over the devices under a JAX
  ``keras.distribution`` via ``predict_on_batch``).
* ``predict_on_batch``, ``pad_batch``, ``data_parallel_size``: data-parallel prediction of
  one batch (padding to a multiple of the device count).
* ``fixed_input_size``, ``inference_model``: what a model accepts, and its single-output
  inference model.
"""

import numpy as np

from keras_segattn.common import MAIN_OUTPUT


def select_logits(outputs):
    """The main logits: ``outputs["logits"]`` of a dict (or its only entry), the first of a
    list, or ``outputs`` itself."""
    if isinstance(outputs, dict):
        if MAIN_OUTPUT in outputs:
            return outputs[MAIN_OUTPUT]
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        raise ValueError(
            f"predict_logits: the model returns a dict without a 'logits' key "
            f"(keys {sorted(outputs)}); return the main logits under 'logits'."
        )
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def _batch_shards(shape):
    """``(layout, parts)``: how a JAX ``keras.distribution`` lays out a batch of ``shape``
    (``distribution.get_data_layout``) and over how many devices its batch axis is split.
    ``(None, 1)`` when no distribution is set, on the other backends (TF strategies and
    torch take care of their own placement) and in multi-process runs (each process then
    predicts its own batch)."""
    import keras

    if keras.backend.backend() != "jax":
        return None, 1
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None, 1
    import jax

    if jax.process_count() > 1:
        return None, 1
    layout = distribution.get_data_layout(tuple(shape))
    axis = layout.axes[0] if layout is not None and layout.axes else None
    if axis is None:
        return None, 1
    mesh = layout.device_mesh
    return layout, int(mesh.shape[list(mesh.axis_names).index(axis)])


def _variables_on_mesh(model, layout):
    """Whether ``model``'s variables live on the devices of ``layout`` (a model built before
    the distribution was set keeps them on one device; a batch sharded over other devices
    would then fail with "incompatible devices for jitted computation")."""
    devices = set(layout.backend_layout.device_set)
    for variable in model.weights[:1]:
        sharding = getattr(variable.value, "sharding", None)
        return sharding is not None and set(sharding.device_set) == devices
    return True


def data_parallel_size():
    """Devices a JAX ``keras.distribution`` splits a batch over in this process (1 when
    none is set, on TF/torch, or in a multi-process run)."""
    return _batch_shards((1, 1, 1, 1))[1]


def pad_batch(array, multiple):
    """Append copies of the last entry so that ``len(array)`` is a multiple of ``multiple``."""
    extra = -array.shape[0] % multiple
    if not extra:
        return array
    return np.concatenate([array, np.repeat(array[-1:], extra, axis=0)], axis=0)


def predict_on_batch(model, images):
    """``model.predict_on_batch(images)``, data-parallel under a JAX ``keras.distribution``.

    Keras' ``predict_on_batch`` (like calling the model) does not shard its input (only the
    ``fit``/``evaluate``/``predict`` data iterators do, Keras 3.15), so under
    ``DataParallel`` every device would run the whole batch. Here the batch is padded with
    copies of its last image to a multiple of the device count (sharding an indivisible
    batch raises ``IndivisibleError``, keras-team/keras#21167), placed with the
    distribution's data layout, and the padding rows are dropped from every output.
    Without a distribution (and on TF / torch), or for a model built before the
    distribution was set (its variables sit on one device), this is
    ``model.predict_on_batch``. (Under a TF ``MirroredStrategy``, Keras runs the whole
    batch on every replica and concatenates the copies; the trimming keeps the first.)

    Returns the model's outputs (a NumPy array, or a list / dict of them), ``len(images)``
    rows each.
    """
    import keras

    n = images.shape[0]
    layout, parts = _batch_shards(images.shape)
    inputs = images
    if parts > 1 and _variables_on_mesh(model, layout):
        padded = pad_batch(images, parts)
        layout = keras.distribution.distribution().get_data_layout(padded.shape)
        inputs = keras.distribution.distribute_tensor(padded, layout)
    outputs = model.predict_on_batch(inputs)
    return keras.tree.map_structure(lambda out: np.asarray(out)[:n], outputs)


def forward(model, batch):
    """Run ``model`` on a float32 NumPy batch and return its main logits, float32 NumPy.

    A Keras model under a JAX ``keras.distribution`` goes through :func:`predict_on_batch`
    (batch sharded over the devices, padded when it does not divide), like the whole-image
    path of :func:`keras_segattn.evaluation.evaluate`.
    """
    import keras

    if isinstance(model, keras.Model) and data_parallel_size() > 1:
        outputs = predict_on_batch(model, batch)
    elif isinstance(model, keras.Model) or isinstance(model, keras.layers.Layer):
        outputs = model(keras.ops.convert_to_tensor(batch), training=False)
    else:
        outputs = model(batch)
    logits = select_logits(outputs)
    logits = keras.ops.convert_to_numpy(logits) if not isinstance(logits, np.ndarray) else logits
    return logits.astype("float32", copy=False)


def fixed_input_size(model):
    """``(H, W)`` when the model only accepts one spatial size, else ``None``."""
    size = getattr(model, "input_size", None)
    if size is not None:
        return tuple(int(s) for s in size)
    shape = None
    try:
        inputs = getattr(model, "inputs", None)
        if inputs:
            shape = tuple(inputs[0].shape)
    except (AttributeError, ValueError):
        shape = None
    if shape is not None and len(shape) == 4 and shape[1] is not None and shape[2] is not None:
        return int(shape[1]), int(shape[2])
    return None


def inference_model(model):
    """The single-output inference model of a segmentation model (or the model itself)."""
    for name in ("inference_model", "get_inference_model", "build_inference_model", "export_model"):
        method = getattr(model, name, None)
        if callable(method):
            try:
                return method()
            except TypeError:
                continue
    return model

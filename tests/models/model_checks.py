"""Shared checks for ``keras_segattn.models`` tests (tiny backbone, small images).

Every model test file keeps only what is specific to its model and calls:

* ``check_model_contract``: output names/shapes/dtypes at an odd size, two fit steps with
  every loss in the logs that move every trainable variable, ``predict`` and the ``.keras`` round trip (same class, config, weights
  and predictions);
* ``check_mixed_precision_and_registry``: ``models.get(name)`` under ``mixed_float16``
  gives the right class and float32 logits at an odd size;
* ``check_invalid_arguments``: the constructor rejects bad arguments with ``ValueError``.
"""

import json
import os
import tempfile

import keras
import numpy as np

from keras_segattn import models
from keras_segattn.testing import assert_allclose

TINY = "resnet_tiny"

# Rejected by every model constructor (before any backbone is built).
INVALID_ARGUMENTS = (
    dict(num_classes=0), dict(num_classes=2.5), dict(num_classes=3, activation="gelu"),
)


def images(batch=2, height=32, width=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def labels(num_classes, batch=2, height=32, width=32, seed=0):
    y = np.random.default_rng(seed).integers(0, num_classes, (batch, height, width)).astype("int32")
    y[:, :2] = 255  # some ignored pixels
    return y


def golden(name):
    data = np.load(os.path.join(os.path.dirname(__file__), "..", "golden", f"{name}.npz"))
    with open(os.path.join(os.path.dirname(__file__), "..", "golden", f"{name}.json")) as f:
        meta = json.load(f)
    state = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
    return data, meta, state


def check_model_contract(model, expected_outputs, num_classes, loss_weights=None,
                         image_level=()):
    """Outputs dict, odd-size predict, fit with every loss, ``.keras`` round trip.

    ``loss_weights``: the expected ``default_loss_weights`` (its keys are always checked).
    ``image_level``: names of outputs shaped ``(B, num_classes)`` instead of per pixel.
    """
    x_odd = images(batch=1, height=37, width=45, seed=1)
    assert model.segmentation_output_names == sorted(expected_outputs)
    # Symbolic outputs (no eager call: that costs a compile per op on JAX).
    outputs = model.compute_output_spec(keras.KerasTensor((1, 37, 45, 3)))
    assert sorted(outputs) == sorted(expected_outputs), sorted(outputs)
    for name, value in outputs.items():
        shape = (1, num_classes) if name in image_level else (1, 37, 45, num_classes)
        assert tuple(value.shape) == shape, (name, value.shape)
        assert keras.backend.standardize_dtype(value.dtype) == "float32", name
    assert sorted(model.default_loss_weights) == sorted(expected_outputs)
    if loss_weights is not None:
        assert model.default_loss_weights == loss_weights, model.default_loss_weights

    # fit: the recipe with AdamW and no weight decay (the loss, CE on every output, and
    # MeanIoU as in the default), one (B,H,W) mask for all outputs, two steps of two images.
    # AdamW's first steps move a variable by about the learning rate whatever its gradient's
    # size, and only if the gradient is nonzero: every trainable variable must move, so a
    # zero gradient (DANet's CAM gamma stayed 0 that way once) fails here. Two steps,
    # because a branch scaled by a zero-initialised gamma gets its gradient only once gamma
    # has moved.
    model.compile(steps=10, optimizer_type="adamw", learning_rate=1e-3, weight_decay=0.0)
    initial = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
    history = model.fit(images(batch=4), labels(num_classes, batch=4), batch_size=2, epochs=1,
                        verbose=0)
    unchanged = [v.path for v in model.trainable_variables
                 if np.array_equal(keras.ops.convert_to_numpy(v), initial[v.path])]
    assert not unchanged, f"no gradient reached {unchanged}"
    logs = history.history
    for name in expected_outputs:
        assert f"{name}_loss" in logs, (name, sorted(logs))
        assert np.isfinite(logs[f"{name}_loss"][-1]), (name, logs)
    assert "logits_mean_iou" in logs, sorted(logs)
    assert np.isfinite(logs["loss"][-1])

    # predict returns only the main logits, at odd sizes, float32.
    predicted = model.predict(x_odd, verbose=0)
    assert predicted.shape == (1, 37, 45, num_classes) and predicted.dtype == np.float32

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        restored = keras.models.load_model(path)
    assert type(restored) is type(model)
    assert restored.get_config() == model.get_config()
    # Every weight (auxiliary heads included) comes back, so every output would match too.
    assert len(restored.weights) == len(model.weights)
    for saved, loaded in zip(model.weights, restored.weights):
        assert_allclose(loaded, saved, atol=0, rtol=0, err_msg=saved.path)
    assert_allclose(restored.predict(x_odd, verbose=0), predicted, atol=1e-5, rtol=1e-5,
                    err_msg=".keras round trip changed the predictions")
    return restored


def check_mixed_precision_and_registry(name, cls, num_classes, expected_outputs=("logits",),
                                       **kwargs):
    """``models.get(name, ...)`` under ``mixed_float16``: class, outputs, float32 logits."""
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = models.get(name, num_classes=num_classes, **kwargs)
    finally:
        keras.config.set_dtype_policy("float32")
    assert type(model) is cls, type(model)
    assert model.segmentation_output_names == sorted(expected_outputs)
    assert model.get_layer("head").compute_dtype == "float16"
    logits = model.predict(images(batch=1, height=35, width=29, seed=2), verbose=0)
    assert logits.shape == (1, 35, 29, num_classes) and logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    return model


def check_invalid_arguments(cls, extra=(), **fixed):
    """``cls(backbone=TINY, **fixed, **kwargs)`` raises ``ValueError`` for each of
    ``INVALID_ARGUMENTS`` and ``extra``."""
    for kwargs in tuple(INVALID_ARGUMENTS) + tuple(extra):
        try:
            cls(backbone=TINY, **fixed, **kwargs)
        except ValueError:
            continue
        raise AssertionError(f"{cls.__name__}(**{kwargs}) did not raise ValueError")

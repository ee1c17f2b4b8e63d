"""Shared checks for ``keras_segattn.models`` tests (tiny backbone, small images)."""

import json
import os
import tempfile

import keras
import numpy as np

from keras_segattn.testing import assert_allclose

TINY = "resnet_tiny"


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


def check_model_contract(model, expected_outputs, num_classes):
    """Outputs dict, odd-size predict, fit with every loss, ``.keras`` round trip."""
    x_odd = images(batch=1, height=37, width=45, seed=1)
    # Symbolic outputs (no eager call: that costs a compile per op on JAX).
    outputs = model.compute_output_spec(keras.KerasTensor((1, 37, 45, 3)))
    assert sorted(outputs) == sorted(expected_outputs), sorted(outputs)
    for name, value in outputs.items():
        assert tuple(value.shape) == (1, 37, 45, num_classes), (name, value.shape)
        assert keras.backend.standardize_dtype(value.dtype) == "float32", name
    assert sorted(model.default_loss_weights) == sorted(expected_outputs)

    # fit: defaults (SGD poly, CE on every output, MeanIoU), one (B,H,W) mask for all outputs.
    model.compile(steps=10)
    history = model.fit(images(), labels(num_classes), batch_size=2, epochs=1, verbose=0)
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
    assert_allclose(restored.predict(x_odd, verbose=0), predicted, atol=1e-5, rtol=1e-5,
                    err_msg=".keras round trip changed the predictions")
    return restored

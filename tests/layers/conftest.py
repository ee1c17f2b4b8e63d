"""Fixtures shared by the layer tests."""

import json
import os

import keras
import numpy as np
import pytest

from keras_segattn import convert

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden")


def _load_golden(case):
    """``(meta, arrays, params)`` of golden case ``case`` (see tests/golden/README.md).

    ``params`` maps the reference's parameter names to arrays (the ``param/`` entries).
    """
    with open(os.path.join(GOLDEN, f"{case}.json")) as f:
        meta = json.load(f)
    with np.load(os.path.join(GOLDEN, f"{case}.npz")) as data:
        arrays = {k: data[k] for k in data.files}
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    return meta, arrays, params


@pytest.fixture(scope="session")
def load_golden():
    """The golden-case loader: ``meta, arrays, params = load_golden("danet_pam")``."""
    return _load_golden


def _check_golden(case, layer):
    """Reproduce golden ``case`` with ``layer`` (built from the case's constructor kwargs):
    build it on the input, check that its reference keys are exactly the case's parameter
    keys, load the parameters with ``load_reference_weights`` and compare the inference
    output at the case's tolerance. Returns ``(meta, arrays)``."""
    meta, arrays, params = _load_golden(case)
    x = arrays["input"]
    layer(x)
    expected_keys = sorted(p["key"] for p in meta["params"] if "num_batches" not in p["key"])
    assert sorted(layer.reference_weight_mapping()) == expected_keys
    convert.load_reference_weights(layer, params)
    tol = meta["tolerance"]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x, training=False)), arrays["output"],
        atol=tol["atol"], rtol=tol["rtol"],
    )
    return meta, arrays


@pytest.fixture(scope="session")
def check_golden():
    """``check_golden(case, layer)``: see ``_check_golden``."""
    return _check_golden


def _call_compiled(layer, x, **call_kwargs):
    """``layer(x, **call_kwargs)`` as a NumPy array, compiled on JAX.

    On JAX an eager call compiles every primitive for each new shape and dtype (about
    1-3 s of CPU for a block on a large float16 map); ``Model.predict`` compiles the
    graph once (a fraction of that). Other backends call the layer eagerly (tf.function
    tracing would cost more than it saves). Builds ``layer`` if needed.
    """
    if keras.backend.backend() != "jax":
        return keras.ops.convert_to_numpy(layer(x, **call_kwargs))
    inputs = keras.Input(tuple(x.shape[1:]), batch_size=x.shape[0], dtype=str(x.dtype))
    model = keras.Model(inputs, layer(inputs, **call_kwargs))
    return model.predict(x, batch_size=x.shape[0], verbose=0)


@pytest.fixture(scope="session")
def call_compiled():
    """``call_compiled(layer, x, **call_kwargs)``: see ``_call_compiled``."""
    return _call_compiled

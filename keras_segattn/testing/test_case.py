"""A shared test base in the spirit of KerasHub's ``TestCase``.

Every layer and model test reuses the same checks, so each gets serialization, dynamic
shape, saving and mixed-precision coverage for a few lines of test code:

* ``run_layer_test``: builds the layer inside a functional model with ``None`` spatial
  dims, calls it eagerly and through ``predict``, round-trips ``get_config`` ->
  ``from_config`` (JSON too) and ``.keras`` save/load with identical outputs, and runs the
  mixed-precision checks.
* ``run_precision_test``: ``mixed_float16`` / ``mixed_bfloat16``: float32 variables, finite
  outputs of the expected dtype.
* ``run_model_saving_test``: ``.keras`` round-trip of a model, same class, same outputs.
* ``assert_allclose``: NumPy comparison that accepts TF, JAX and torch tensors.
* ``values_and_input_gradient``: ``fn(x)`` and the gradient of a fixed weighted sum of it
  with respect to ``x``, with the current backend's own autodiff.
"""

import json
import os
import tempfile

import keras
import numpy as np


def to_numpy(value):
    """Convert a backend tensor (or nested list/tuple/dict of them) to NumPy."""
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_numpy(v) for v in value)
    if isinstance(value, np.ndarray):
        return value
    return keras.ops.convert_to_numpy(value)


def assert_allclose(actual, desired, atol=1e-6, rtol=1e-6, err_msg=""):
    """``np.testing.assert_allclose`` for backend tensors and nested structures."""
    actual, desired = to_numpy(actual), to_numpy(desired)
    if isinstance(desired, dict):
        assert isinstance(actual, dict) and sorted(actual) == sorted(desired), err_msg
        for key in desired:
            assert_allclose(actual[key], desired[key], atol, rtol, f"{err_msg} [{key}]")
        return
    if isinstance(desired, (list, tuple)):
        assert len(actual) == len(desired), f"{err_msg}: {len(actual)} != {len(desired)} outputs"
        for i, (a, d) in enumerate(zip(actual, desired)):
            assert_allclose(a, d, atol, rtol, f"{err_msg} [{i}]")
        return
    np.testing.assert_allclose(
        np.asarray(actual, dtype="float64"),
        np.asarray(desired, dtype="float64"),
        atol=atol,
        rtol=rtol,
        err_msg=err_msg,
    )


def gradient_weights(shape):
    """The fixed output weights ``w`` of ``values_and_input_gradient`` for an output of
    ``shape``: standard normal, seed 5, float32 (a test's expected gradient is ``w``
    pulled back through the function)."""
    return np.random.default_rng(5).normal(size=tuple(shape)).astype("float32")


def values_and_input_gradient(fn, x):
    """``(fn(x), d sum(fn(x) * w) / dx)`` with ``w = gradient_weights(fn(x).shape)``,
    differentiated by the current backend (``tf.GradientTape``, ``jax.value_and_grad``,
    torch autograd). ``x``: a float32 NumPy array."""
    backend = keras.backend.backend()

    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(tf.cast(y, "float32") * gradient_weights(y.shape))
        return y, tape.gradient(loss, x)
    if backend == "jax":
        import jax

        def loss(x):
            y = fn(x)
            return (y.astype("float32") * gradient_weights(y.shape)).sum(), y

        (_, y), grad = jax.value_and_grad(loss, has_aux=True)(x)
        return y, grad
    import torch

    x = torch.tensor(x, requires_grad=True)
    y = fn(x)
    (y.float() * torch.from_numpy(gradient_weights(y.shape))).sum().backward()
    return y.detach(), x.grad


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _symbolic_inputs(input_data, dynamic_spatial=True):
    """``keras.Input`` per array; spatial dims of 4-D inputs are ``None``."""
    inputs = []
    for array in _as_list(input_data):
        shape = list(array.shape[1:])
        if dynamic_spatial and len(shape) == 3:
            shape[0] = shape[1] = None
        inputs.append(keras.Input(shape=tuple(shape), dtype=str(array.dtype)))
    return inputs


def _flat_outputs(outputs):
    if isinstance(outputs, dict):
        return [outputs[k] for k in sorted(outputs)]
    return _as_list(outputs)


class TestCase:
    """Mixin for pytest test classes (plain ``class TestFoo(TestCase):``)."""

    def setup_method(self, method):
        keras.config.set_dtype_policy("float32")
        keras.utils.set_random_seed(1337)

    def teardown_method(self, method):
        keras.config.set_dtype_policy("float32")
        # free_memory=False: the default runs gc.collect(), ~1 s per test on 2 cores.
        keras.backend.clear_session(free_memory=False)

    # -- comparisons ------------------------------------------------------------------
    def assertAllClose(self, actual, desired, atol=1e-6, rtol=1e-6, msg=""):
        assert_allclose(actual, desired, atol=atol, rtol=rtol, err_msg=msg)

    # -- layers -----------------------------------------------------------------------
    def run_layer_test(
        self,
        layer_cls,
        init_kwargs,
        input_data,
        expected_output_shape=None,
        call_kwargs=None,
        run_precision_checks=True,
        run_saving_check=True,
        run_training_check=False,
        atol=1e-5,
        rtol=1e-5,
    ):
        """Build, call, serialize and save ``layer_cls(**init_kwargs)`` on ``input_data``.

        ``input_data``: a NumPy array, or a list of arrays for multi-input layers (passed
        positionally). ``expected_output_shape``: a shape tuple, or a list of them for
        multi-output layers. Returns the layer built inside the functional model.
        """
        call_kwargs = call_kwargs or {}
        arrays = _as_list(input_data)

        # Build on dynamic spatial input inside a functional model.
        symbolic = _symbolic_inputs(input_data)
        layer = layer_cls(**init_kwargs)
        outputs = layer(*symbolic, **call_kwargs)
        model = keras.Model(symbolic, outputs)

        eager = layer(*arrays, **call_kwargs)
        if expected_output_shape is not None:
            expected = (
                expected_output_shape
                if isinstance(expected_output_shape, list)
                else [expected_output_shape]
            )
            got = [tuple(o.shape) for o in _flat_outputs(eager)]
            assert got == [tuple(s) for s in expected], f"output shapes {got} != {expected}"
        for out in _flat_outputs(eager):
            assert np.all(np.isfinite(to_numpy(out))), "non-finite output"
        predicted = model.predict(arrays if len(arrays) > 1 else arrays[0], verbose=0)
        assert_allclose(predicted, eager, atol, rtol, "predict() vs eager call")

        self.run_serialization_test(layer, arrays, call_kwargs, atol, rtol)
        if run_saving_check:
            self.run_model_saving_test(model, arrays if len(arrays) > 1 else arrays[0], atol, rtol)
        if run_precision_checks:
            self.run_precision_test(layer_cls, init_kwargs, input_data, call_kwargs)
        if run_training_check:
            self.run_training_test(model, arrays)
        return layer

    def run_serialization_test(self, layer, arrays, call_kwargs=None, atol=1e-6, rtol=1e-6):
        """``get_config`` -> JSON -> ``from_config`` gives the same layer and outputs."""
        call_kwargs = call_kwargs or {}
        config = layer.get_config()
        json.dumps(keras.saving.serialize_keras_object(layer))  # must be JSON-serializable
        revived = type(layer).from_config(config)
        assert revived.get_config() == config, "get_config() changed after from_config()"
        revived_via_registry = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(layer)
        )
        assert type(revived_via_registry) is type(layer), "not registered as serializable"
        revived(*arrays, **call_kwargs)
        revived.set_weights(layer.get_weights())
        assert_allclose(
            revived(*arrays, **call_kwargs), layer(*arrays, **call_kwargs), atol, rtol,
            "from_config() round-trip changed the output",
        )
        return revived

    def run_model_saving_test(self, model, input_data, atol=1e-6, rtol=1e-6):
        """``.keras`` save/load restores the same class and identical predictions."""
        expected = model.predict(input_data, verbose=0)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            restored = keras.models.load_model(path)
        assert type(restored) is type(model), f"{type(restored)} restored as {type(model)}"
        assert [type(l) for l in restored.layers] == [type(l) for l in model.layers]
        assert_allclose(
            restored.predict(input_data, verbose=0), expected, atol, rtol,
            ".keras round-trip changed the output",
        )
        return restored

    def run_precision_test(self, layer_cls, init_kwargs, input_data, call_kwargs=None,
                           policies=("mixed_float16", "mixed_bfloat16")):
        """Under mixed policies: float32 variables, finite outputs in the compute dtype."""
        call_kwargs = call_kwargs or {}
        for policy in policies:
            layer = layer_cls(**init_kwargs, dtype=policy)
            arrays = _as_list(input_data)
            outputs = _flat_outputs(layer(*arrays, **call_kwargs))
            for variable in layer.weights:
                assert variable.dtype == "float32", f"{policy}: {variable.path} is {variable.dtype}"
            compute_dtype = keras.DTypePolicy(policy).compute_dtype
            for out in outputs:
                out_dtype = keras.backend.standardize_dtype(out.dtype)
                assert out_dtype in (compute_dtype, "float32"), f"{policy}: output dtype {out_dtype}"
                assert np.all(np.isfinite(to_numpy(keras.ops.cast(out, "float32")))), (
                    f"{policy}: non-finite output"
                )

    def run_training_test(self, model, arrays):
        """One SGD step on a squared-error loss: finite loss, the weights change."""
        targets = [np.zeros(tuple(o.shape), "float32") for o in _flat_outputs(model(arrays))]
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        before = [w.copy() for w in model.get_weights()]
        history = model.fit(
            arrays if len(arrays) > 1 else arrays[0],
            targets if len(targets) > 1 else targets[0],
            epochs=1, batch_size=len(arrays[0]), verbose=0,
        )
        assert np.isfinite(history.history["loss"][-1])
        after = model.get_weights()
        assert any(not np.array_equal(b, a) for b, a in zip(before, after)), "no weight changed"

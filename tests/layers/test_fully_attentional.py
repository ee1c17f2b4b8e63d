import keras
import numpy as np
import pytest

from keras_segattn.layers import FullyAttentional
from keras_segattn.layers.fully_attentional import (
    _attend_function,
    _attend_lines,
    _attend_lines_flat_gradient,
    _attend_lines_per_sample,
    _attend_lines_written_out,
)
from keras_segattn.testing import TestCase, values_and_input_gradient

class TestFullyAttentional(TestCase):
    def test_golden_flanet_fa(self, check_golden):
        check_golden("flanet_fa", FullyAttentional())

    def test_batch_equals_per_sample(self):
        # The upstream .repeat() tiling mixes samples for batch > 1; ours must not.
        rng = np.random.default_rng(0)
        # Per sample = the golden shape (1, 9, 7, 16); batched = the contract test's shape.
        x = rng.normal(size=(2, 9, 7, 16)).astype("float32")
        layer = FullyAttentional()
        layer(x)
        layer.gamma.assign(np.array([1.3], "float32"))
        batched = keras.ops.convert_to_numpy(layer(x, training=False))
        for b in range(2):
            self.assertAllClose(batched[b:b + 1], layer(x[b:b + 1], training=False), atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("wrt", ["lines", "descriptors"])
    @pytest.mark.parametrize("written_out", [_attend_lines_per_sample, _attend_lines_written_out,
                                             _attend_lines_flat_gradient])
    def test_written_out_gradient_equals_the_plain_expression(self, wrt, written_out):
        """The written-out forms (``_attend_lines_per_sample``: JAX;
        ``_attend_lines_written_out``: eager TensorFlow; ``_attend_lines_flat_gradient``:
        TensorFlow graphs) against the plain expression
        differentiated by the backend, on every backend, and the values against float64
        NumPy."""
        rng = np.random.default_rng(4)
        lines = rng.normal(size=(2, 3, 5, 4)).astype("float32")  # (B, L, C, S)
        descriptors = rng.normal(size=(2, 4, 5)).astype("float32")  # (B, S, C')
        energy = lines.astype("float64") @ descriptors[:, None].astype("float64")
        attention = np.exp(energy - energy.max(-1, keepdims=True))
        attention /= attention.sum(-1, keepdims=True)
        expected = np.swapaxes(attention @ lines.astype("float64"), -1, -2)  # (B, L, S, C)
        results = {}
        for attend_lines in (written_out, _attend_lines):
            def attend(x):
                # custom_gradient on torch takes tensors only
                if wrt == "lines":
                    return attend_lines(x, keras.ops.convert_to_tensor(descriptors), "float32")
                return attend_lines(keras.ops.convert_to_tensor(lines), x, "float32")

            results[attend_lines] = values_and_input_gradient(
                attend, lines if wrt == "lines" else descriptors)
            self.assertAllClose(results[attend_lines][0], expected, atol=1e-5, rtol=1e-5)
        self.assertAllClose(results[written_out][1], results[_attend_lines][1],
                            atol=1e-5, rtol=1e-5)

    def test_each_backend_takes_its_form(self):
        """JAX takes ``_attend_lines_per_sample``, eager TensorFlow
        ``_attend_lines_written_out``, a ``tf.function``
        ``_attend_lines_flat_gradient``, PyTorch the plain expression; on TensorFlow the
        layer's gradients agree eagerly, in a graph and under XLA, with an unknown batch and
        image size too."""
        backend = keras.backend.backend()
        if backend != "tensorflow":
            expected = _attend_lines_per_sample if backend == "jax" else _attend_lines
            assert _attend_function() is expected
            return
        import tensorflow as tf

        in_graph = []
        tf.function(lambda: in_graph.append(_attend_function()))()
        assert _attend_function() is _attend_lines_written_out
        assert in_graph == [_attend_lines_flat_gradient]

        x = tf.constant(np.random.default_rng(6).normal(size=(2, 9, 7, 16)).astype("float32"))
        upstream = tf.constant(np.random.default_rng(7).normal(size=(2, 9, 7, 16)), "float32")
        layer = FullyAttentional()
        layer(x)
        layer.gamma.assign(np.array([0.7], "float32"))

        def gradients(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
            return tape.gradient(y, [x, layer.gamma, layer.row_dense.kernel,
                                     layer.col_dense.kernel], output_gradients=upstream)

        eager = gradients(x)
        any_size = tf.TensorSpec((None, None, None, 16), "float32")
        for compiled in (tf.function(gradients), tf.function(gradients, jit_compile=True),
                         tf.function(gradients, input_signature=[any_size])):
            self.assertAllClose(compiled(x), eager, atol=1e-4, rtol=1e-4)

    def test_layer_contract(self):
        x = np.random.default_rng(1).normal(size=(2, 9, 7, 16)).astype("float32")
        layer = self.run_layer_test(FullyAttentional, {}, x, expected_output_shape=(2, 9, 7, 16))
        self.assertAllClose(layer.gamma, np.zeros(1))

    def test_float16_large_map_is_finite(self, call_compiled):
        x = np.random.default_rng(3).normal(size=(1, 128, 128, 4)).astype("float32") * 4
        layer = FullyAttentional(dtype="mixed_float16")
        layer.build(x.shape)
        layer.gamma.assign(np.array([1.0], "float32"))
        y = call_compiled(layer, x)
        assert keras.backend.standardize_dtype(y.dtype) == "float16"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))))

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="4-D"):
            FullyAttentional()(np.ones((2, 8, 8), "float32"))

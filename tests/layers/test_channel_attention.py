import keras
import numpy as np
import pytest

from keras_segattn.layers import ChannelAttention
from keras_segattn.testing import TestCase, gradient_weights, values_and_input_gradient

def numpy_cam(x, gamma):
    """Independent float64 CAM: softmax(-X X^T) over channels."""
    b, h, w, c = x.shape
    flat = x.reshape(b, h * w, c).astype("float64")
    energy = -np.einsum("bnc,bnd->bcd", flat, flat)
    att = np.exp(energy - energy.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    out = np.einsum("bcd,bnd->bnc", att, flat)
    return (gamma * out + flat).reshape(b, h, w, c), att


class TestChannelAttention(TestCase):
    def test_matches_danet_golden(self, check_golden):
        check_golden("danet_cam", ChannelAttention())

    def test_layer_contract(self):
        x = np.random.default_rng(0).normal(size=(2, 7, 5, 6)).astype("float32")
        self.run_layer_test(ChannelAttention, {}, x, expected_output_shape=(2, 7, 5, 6))

    # 256 channels: the energies from their three distinct blocks (``gram_matrix``).
    @pytest.mark.parametrize("channels", [6, 256])
    def test_scores_match_softmax_of_negative_energy(self, channels):
        x = (0.3 * np.random.default_rng(1).normal(size=(2, 7, 5, channels))).astype("float32")
        layer = ChannelAttention()
        layer(x)
        layer.gamma.assign(np.array([1.3], "float32"))
        out, att = layer(x, return_attention_scores=True)
        expected, expected_att = numpy_cam(x, 1.3)
        assert tuple(att.shape) == (2, channels, channels)
        self.assertAllClose(att, expected_att, atol=1e-6, rtol=1e-4)
        self.assertAllClose(out, expected, atol=1e-5, rtol=1e-4)

    @pytest.mark.parametrize("channels", [6, 256])
    def test_input_gradient_equals_finite_differences_of_the_reference(self, channels):
        # The layer's gradient of E = X X^T is written out (dL/dX = X (G + G^T)): it must
        # still be that of the formula. Reference: central differences of the
        # float64 NumPy CAM along random directions, against <dL/dx, direction>.
        rng = np.random.default_rng(6)
        x = (0.5 * rng.normal(size=(2, 5, 4, channels))).astype("float32")
        layer = ChannelAttention()
        layer(x)
        layer.gamma.assign(np.array([0.8], "float32"))
        y, grad = values_and_input_gradient(layer, x)
        w = gradient_weights(x.shape)  # the helper's output weights

        def loss(v):
            return float(np.sum(numpy_cam(v, 0.8)[0] * w))

        grad = np.asarray(keras.ops.convert_to_numpy(grad), "float64")
        for seed in range(3):
            direction = np.random.default_rng(10 + seed).normal(size=x.shape)
            step = 1e-4
            numeric = (loss(x + step * direction) - loss(x - step * direction)) / (2 * step)
            np.testing.assert_allclose(np.sum(grad * direction), numeric, rtol=1e-4)

    @pytest.mark.parametrize("gamma", [0.0, 0.8])
    def test_gamma_gradient_equals_finite_differences_of_the_reference(self, gamma):
        # At gamma = 0, its initial value, every entry of gamma A is below the flush
        # threshold: the flush must not stop gamma's gradient there (it would never train).
        x = (0.5 * np.random.default_rng(8).normal(size=(2, 5, 4, 6))).astype("float32")
        w = np.random.default_rng(9).normal(size=x.shape).astype("float32")
        layer = ChannelAttention()
        layer(x)
        layer.gamma.assign(np.array([gamma], "float32"))
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(x) * w)
            grad = tape.gradient(loss, layer.gamma.value)
        elif backend == "jax":
            import jax

            def loss_of(g):
                y, _ = layer.stateless_call([g], [], x)
                return (y * w).sum()

            grad = jax.grad(loss_of)(layer.gamma.value)
        else:
            import torch

            (layer(torch.from_numpy(x)) * torch.from_numpy(w)).sum().backward()
            grad = layer.gamma.value.grad
        grad = float(np.asarray(keras.ops.convert_to_numpy(grad)).reshape(-1)[0])

        def loss(g):
            return float(np.sum(numpy_cam(x, g)[0] * w))

        step = 1e-3  # the output is linear in gamma
        numeric = (loss(gamma + step) - loss(gamma - step)) / (2 * step)
        assert abs(numeric) > 1.0
        np.testing.assert_allclose(grad, numeric, rtol=1e-4)

    def test_subnormal_attention_weights_flushed_without_changing_the_output(self):
        """Energies that differ by ~85-105 leave softmax weights between 1e-46 and 1e-37:
        subnormal in float32 (the reference keeps them, the layer flushes gamma * A to zero
        before the product). Outputs and input gradient still equal the float64 reference
        (whose subnormal terms are far below float32 resolution) and finite differences."""
        rng = np.random.default_rng(7)
        # channel c has norm^2 ~ 85 + 2.5 c over 4 positions: E[i, j] spans ~ +-100
        scales = np.sqrt(np.linspace(85, 105, 8) / 4)
        x = (scales * np.sign(rng.normal(size=(1, 2, 2, 8)))).astype("float32")
        _, att64 = numpy_cam(x, 1.0)
        subnormal = (att64 > 0) & (att64 < 1.1754944e-38)
        assert subnormal.sum() >= 4  # the regime this test is about
        layer = ChannelAttention()
        layer(x)
        layer.gamma.assign(np.array([0.7], "float32"))
        y, grad = values_and_input_gradient(layer, x)
        self.assertAllClose(y, numpy_cam(x, 0.7)[0], atol=1e-4, rtol=1e-5)
        w = gradient_weights(x.shape)
        direction = np.random.default_rng(11).normal(size=x.shape)
        step = 1e-3
        numeric = (np.sum(numpy_cam(x + step * direction, 0.7)[0] * w)
                   - np.sum(numpy_cam(x - step * direction, 0.7)[0] * w)) / (2 * step)
        grad = np.asarray(keras.ops.convert_to_numpy(grad), "float64")
        np.testing.assert_allclose(np.sum(grad * direction), numeric, rtol=1e-3)

    def test_scores_in_functional_model(self):
        x = np.random.default_rng(2).normal(size=(2, 7, 5, 6)).astype("float32")
        inputs = keras.Input((None, None, 6))
        outputs = ChannelAttention()(inputs, return_attention_scores=True)
        out, att = keras.Model(inputs, outputs)(x)
        assert tuple(out.shape) == (2, 7, 5, 6) and tuple(att.shape) == (2, 6, 6)

    @pytest.mark.parametrize("shape", [(1, 1, 1, 3), (3, 1, 6, 9)])
    def test_identity_at_init_any_size(self, shape):
        x = np.random.default_rng(3).normal(size=shape).astype("float32")
        self.assertAllClose(ChannelAttention()(x), x)

    def test_float16_128x128_finite(self, call_compiled):
        # std 3 over N = 16384 positions: energies ~1.5e5 overflow float16 (max 65504), so
        # this only passes because the energies and softmax run in float32.
        x = (3 * np.random.default_rng(4).normal(size=(1, 128, 128, 16))).astype("float32")
        layer = ChannelAttention(dtype="mixed_float16")
        layer.build(x.shape)
        layer.gamma.assign(np.ones((1,), "float32"))
        out = call_compiled(layer, x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))))

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="4-D channels-last"):
            ChannelAttention()(np.ones((2, 4, 4, 4, 4), "float32"))

import keras
import numpy as np
import pytest

from keras_segattn.layers import LinearChannelAttention, LinearPositionAttention
from keras_segattn.testing import TestCase, gradient_weights, values_and_input_gradient

def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_position(x, layer, gamma, eps):
    """(1 + q^.k^) Taylor attention as a dense loop-free float64 formula (mechanisms.md §4)."""
    w = [keras.ops.convert_to_numpy(v).astype("float64") for v in (
        layer.query_conv.kernel, layer.query_conv.bias, layer.key_conv.kernel,
        layer.key_conv.bias, layer.value_conv.kernel, layer.value_conv.bias)]
    b, h, wd, c = x.shape
    n = h * wd
    flat = x.reshape(b, n, c).astype("float64")
    q = _normalize(flat @ w[0][0, 0] + w[1])
    k = _normalize(flat @ w[2][0, 0] + w[3])
    v = flat @ w[4][0, 0] + w[5]
    weights = 1.0 + q @ k.transpose(0, 2, 1)  # (B, N, N)
    denominator = weights.sum(-1) + eps * q.sum(-1)  # eps enters as eps * sum_m q^[m]
    out = (weights @ v) / denominator[..., None]
    return (flat + gamma * out).reshape(b, h, wd, c)


def numpy_channel(x, gamma, eps):
    """The reference code's channel expression (mechanisms.md §4), float64."""
    b, h, wd, c = x.shape
    n = h * wd
    flat = x.reshape(b, n, c).astype("float64")
    xh = _normalize(flat)
    cos = xh @ xh.transpose(0, 2, 1)  # (B, N, N): cos(m, n)
    numerator = flat.sum(-1, keepdims=True) + cos @ flat  # (B, N, C)
    denominator = n + np.einsum("bnc,bn->bc", xh, xh.sum(-1) + eps)  # (B, C)
    return (flat + gamma * numerator / denominator[:, None, :]).reshape(b, h, wd, c)


class TestLinearPositionAttention(TestCase):
    def test_matches_lam_golden(self, load_golden, check_golden):
        kwargs = load_golden("lam_position")[0]["constructor_kwargs"]
        layer = LinearPositionAttention(reduction=8, eps=kwargs["eps"])
        _, arrays = check_golden("lam_position", layer)
        assert arrays["input"].shape[-1] == kwargs["in_places"]

    def test_layer_contract(self):
        x = np.random.default_rng(0).normal(size=(2, 7, 5, 16)).astype("float32")
        self.run_layer_test(
            LinearPositionAttention, {"reduction": 8, "eps": 1e-6}, x,
            expected_output_shape=(2, 7, 5, 16),
        )

    @pytest.mark.parametrize("shape", [(2, 7, 5, 16), (1, 1, 7, 16)])
    def test_non_square_matches_numpy(self, shape):
        # Upstream only works for H == W; the fixed layer must match the formula anywhere.
        x = np.random.default_rng(1).normal(size=shape).astype("float32")
        layer = LinearPositionAttention(reduction=8, eps=1e-6)
        layer(x)
        layer.gamma.assign(np.array([0.9], "float32"))
        self.assertAllClose(layer(x), numpy_position(x, layer, 0.9, 1e-6), atol=1e-5, rtol=1e-4)

    def test_float16_128x128_finite(self, call_compiled):
        x = (3 * np.random.default_rng(4).normal(size=(1, 128, 128, 16))).astype("float32")
        layer = LinearPositionAttention(dtype="mixed_float16")
        layer.build(x.shape)
        layer.gamma.assign(np.ones((1,), "float32"))
        out = call_compiled(layer, x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))))

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="4-D channels-last"):
            LinearPositionAttention()(np.ones((2, 4, 8), "float32"))
        with pytest.raises(ValueError, match="gives 0 query/key channels"):
            LinearPositionAttention(reduction=8)(np.ones((1, 4, 4, 7), "float32"))
        with pytest.raises(ValueError, match="eps must be a non-negative number"):
            LinearPositionAttention(eps=-1.0)


class TestLinearChannelAttention(TestCase):
    def test_matches_lam_golden(self, load_golden, check_golden):
        eps = load_golden("lam_channel")[0]["constructor_kwargs"]["eps"]
        check_golden("lam_channel", LinearChannelAttention(eps=eps))

    def test_layer_contract(self):
        x = np.random.default_rng(0).normal(size=(2, 7, 5, 6)).astype("float32")
        self.run_layer_test(
            LinearChannelAttention, {"eps": 1e-6}, x, expected_output_shape=(2, 7, 5, 6)
        )

    @pytest.mark.parametrize("shape", [(2, 7, 5, 6), (1, 1, 1, 4)])
    def test_non_square_matches_numpy(self, shape):
        x = np.random.default_rng(1).normal(size=shape).astype("float32")
        layer = LinearChannelAttention()
        layer(x)
        layer.gamma.assign(np.array([1.1], "float32"))
        self.assertAllClose(layer(x), numpy_channel(x, 1.1, 1e-6), atol=1e-5, rtol=1e-4)

    def test_zero_positions_give_no_nan(self):
        # Upstream's L2 norm has no epsilon: an all-zero position vector gives NaN there.
        x = np.random.default_rng(2).normal(size=(2, 7, 5, 6)).astype("float32")
        x[0, 1, 2] = 0.0
        layer = LinearChannelAttention()
        layer(x)
        layer.gamma.assign(np.ones((1,), "float32"))
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(layer(x))))

    def test_float16_128x128_finite(self, call_compiled):
        x = (3 * np.random.default_rng(4).normal(size=(1, 128, 128, 16))).astype("float32")
        layer = LinearChannelAttention(dtype="mixed_float16")
        layer.build(x.shape)
        layer.gamma.assign(np.ones((1,), "float32"))
        out = call_compiled(layer, x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))))

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="4-D channels-last"):
            LinearChannelAttention()(np.ones((4, 8), "float32"))
        with pytest.raises(ValueError, match="eps must be a non-negative number"):
            LinearChannelAttention(eps="tiny")


@pytest.mark.parametrize("which", ["position", "channel"])
def test_gradients_equal_finite_differences_of_the_reference(which):
    """Input and gamma gradients against central differences of the float64 NumPy formulas
    above. The gamma-scaled context is ``scale_by`` (on JAX a written-out gradient whose
    factor gradient is a contraction): its gradient must stay the formula's."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 5, 4, 8)).astype("float32")
    layer = LinearPositionAttention(reduction=2) if which == "position" else LinearChannelAttention()
    layer(x)
    gamma = 0.7
    layer.gamma.assign(np.array([gamma], "float32"))

    def reference(v, g):
        if which == "position":
            return numpy_position(v, layer, g, layer.eps)
        return numpy_channel(v, g, layer.eps)

    # input gradient of sum(y * w), w the helper's fixed output weights
    _, grad = values_and_input_gradient(layer, x)
    grad = np.asarray(keras.ops.convert_to_numpy(grad), "float64")
    w = gradient_weights(x.shape)
    step = 1e-5
    for seed in range(3):
        direction = np.random.default_rng(10 + seed).normal(size=x.shape)
        numeric = (np.sum(reference(x + step * direction, gamma) * w)
                   - np.sum(reference(x - step * direction, gamma) * w)) / (2 * step)
        np.testing.assert_allclose(np.sum(grad * direction), numeric, rtol=1e-4)

    # gamma gradient of the mean squared error: one SGD step of rate 1 moves gamma by it
    target = rng.normal(size=x.shape)

    def mse(g):
        return np.mean((reference(x, g) - target) ** 2)

    numeric = (mse(gamma + step) - mse(gamma - step)) / (2 * step)
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    model.train_on_batch(x, target.astype("float32"))
    moved = gamma - float(keras.ops.convert_to_numpy(layer.gamma)[0])
    np.testing.assert_allclose(moved, numeric, rtol=1e-4)

import keras
import numpy as np
import pytest

from keras_segattn.layers import CrissCrossAttention
from keras_segattn.testing import TestCase

def numpy_dense_criss_cross(x, wq, bq, wk, bk, wv, bv, gamma):
    """Dense N x N softmax attention restricted to each pixel's row and column (self once)."""
    b, h, w, c = x.shape
    flat = x.reshape(b, h * w, c).astype("float64")
    q = flat @ wq[0, 0] + bq
    k = flat @ wk[0, 0] + bk
    v = flat @ wv[0, 0] + bv
    rows, cols = np.divmod(np.arange(h * w), w)
    allowed = (rows[:, None] == rows[None, :]) | (cols[:, None] == cols[None, :])
    energy = np.where(allowed, q @ k.transpose(0, 2, 1), -np.inf)
    att = np.exp(energy - energy.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    return (gamma * (att @ v) + flat).reshape(b, h, w, c), att


class TestCrissCrossAttention(TestCase):
    def test_matches_ccnet_golden(self, check_golden):
        meta, arrays = check_golden("ccnet_cca", CrissCrossAttention(reduction=8))
        assert arrays["input"].shape[-1] == meta["constructor_kwargs"]["in_dim"]

    def test_layer_contract(self):
        x = np.random.default_rng(0).normal(size=(2, 7, 5, 16)).astype("float32")
        self.run_layer_test(
            CrissCrossAttention, {"reduction": 8}, x, expected_output_shape=(2, 7, 5, 16),
            run_training_check=True,
        )

    # The contract test's shape (compiled ops are reused) and a single row (H = 1).
    @pytest.mark.parametrize("shape", [(2, 7, 5, 16), (1, 1, 6, 16)])
    def test_equals_dense_row_column_attention(self, shape):
        rng = np.random.default_rng(1)
        x = rng.normal(size=shape).astype("float32")
        layer = CrissCrossAttention(reduction=8)
        layer(x)
        layer.gamma.assign(np.array([0.8], "float32"))
        out, att = layer(x, return_attention_scores=True)
        weights = [keras.ops.convert_to_numpy(v) for v in (
            layer.query_conv.kernel, layer.query_conv.bias, layer.key_conv.kernel,
            layer.key_conv.bias, layer.value_conv.kernel, layer.value_conv.bias)]
        expected, dense = numpy_dense_criss_cross(x, *weights, 0.8)
        self.assertAllClose(out, expected, atol=1e-5, rtol=1e-4)
        # Scores: (B, H, W, H + W); column part first, with 0 at the pixel itself.
        b, h, w, _ = shape
        att = keras.ops.convert_to_numpy(att)
        assert att.shape == (b, h, w, h + w)
        self.assertAllClose(att.sum(-1), np.ones((b, h, w)), atol=1e-5)
        dense = dense.reshape(b, h, w, h, w)
        for i in range(h):
            for j in range(w):
                column = dense[:, i, j, :, j].copy()
                column[:, i] = 0.0
                self.assertAllClose(att[:, i, j, :h], column, atol=1e-6, rtol=1e-4)
                self.assertAllClose(att[:, i, j, h:], dense[:, i, j, i, :], atol=1e-6, rtol=1e-4)

    def test_scores_in_functional_model(self):
        x = np.random.default_rng(2).normal(size=(2, 7, 5, 16)).astype("float32")
        inputs = keras.Input((None, None, 16))
        outputs = CrissCrossAttention(reduction=8)(inputs, return_attention_scores=True)
        out, att = keras.Model(inputs, outputs)(x)
        assert tuple(out.shape) == (2, 7, 5, 16) and tuple(att.shape) == (2, 7, 5, 7 + 5)

    def test_recurrence_shares_weights(self):
        x = np.random.default_rng(3).normal(size=(2, 7, 5, 16)).astype("float32")
        layer = CrissCrossAttention(reduction=8)
        inputs = keras.Input((None, None, 16))
        model = keras.Model(inputs, layer(layer(inputs)))
        assert len(model.weights) == 7
        self.assertAllClose(model(x), x)  # gamma = 0 at init: identity

    def test_float16_128x128_finite(self, call_compiled):
        x = (3 * np.random.default_rng(4).normal(size=(1, 128, 128, 16))).astype("float32")
        layer = CrissCrossAttention(dtype="mixed_float16")
        layer.build(x.shape)
        layer.gamma.assign(np.ones((1,), "float32"))
        out = call_compiled(layer, x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))))

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="4-D channels-last"):
            CrissCrossAttention()(np.ones((2, 4, 8), "float32"))
        with pytest.raises(ValueError, match="gives 0 query/key channels"):
            CrissCrossAttention(reduction=8)(np.ones((1, 4, 4, 7), "float32"))
        with pytest.raises(ValueError, match="reduction must be a positive integer"):
            CrissCrossAttention(reduction=-1)


def test_column_context_and_its_gradient():
    """The column term ``sum_i A[b, h, w, i] V[b, i, w, c]`` (a batched product between
    transposes on JAX, an ``einsum`` elsewhere): values and input gradients against NumPy."""
    from keras_segattn.layers.criss_cross_attention import _column_context
    from keras_segattn.testing import assert_allclose, gradient_weights, values_and_input_gradient

    b, h, w, c = 2, 5, 3, 4  # H != W != C, so that a swapped axis fails
    # attention (B, H, W, H) and value (B, H, W, C) packed along the last axis
    x = np.random.default_rng(0).normal(size=(b, h, w, h + c)).astype("float32")
    y, grad = values_and_input_gradient(lambda x: _column_context(x[..., :h], x[..., h:]), x)
    a, v = x[..., :h].astype("float64"), x[..., h:].astype("float64")
    assert_allclose(y, np.einsum("bhwi,biwc->bhwc", a, v), atol=1e-5, rtol=1e-5)
    upstream = gradient_weights((b, h, w, c)).astype("float64")
    expected = np.concatenate([np.einsum("bhwc,biwc->bhwi", upstream, v),
                               np.einsum("bhwi,bhwc->biwc", a, upstream)], axis=-1)
    assert_allclose(grad, expected, atol=1e-5, rtol=1e-5)

import keras
import numpy as np
import pytest

from keras_segattn.layers import PositionAttention
from keras_segattn.testing import TestCase

def numpy_pam(x, wq, bq, wk, bk, wv, bv, gamma):
    """Independent float64 PAM on NHWC input with Keras-layout 1x1 kernels."""
    b, h, w, c = x.shape
    flat = x.reshape(b, h * w, c).astype("float64")
    q = flat @ wq[0, 0] + bq
    k = flat @ wk[0, 0] + bk
    v = flat @ wv[0, 0] + bv
    energy = q @ k.transpose(0, 2, 1)
    att = np.exp(energy - energy.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    return (gamma * (att @ v) + flat).reshape(b, h, w, c), att


class TestPositionAttention(TestCase):
    def test_matches_danet_golden(self, check_golden):
        meta, arrays = check_golden("danet_pam", PositionAttention(reduction=8))
        assert arrays["input"].shape[-1] == meta["constructor_kwargs"]["in_dim"]

    def test_layer_contract(self):
        x = np.random.default_rng(0).normal(size=(2, 7, 5, 16)).astype("float32")
        self.run_layer_test(
            PositionAttention, {"reduction": 8}, x, expected_output_shape=(2, 7, 5, 16)
        )

    def test_attention_scores_and_numpy_formula(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(2, 7, 5, 16)).astype("float32")  # shapes shared with the contract
        layer = PositionAttention(reduction=8)
        layer(x)
        layer.gamma.assign(np.array([0.7], "float32"))
        out, att = layer(x, return_attention_scores=True)
        weights = [keras.ops.convert_to_numpy(v) for v in (
            layer.query_conv.kernel, layer.query_conv.bias, layer.key_conv.kernel,
            layer.key_conv.bias, layer.value_conv.kernel, layer.value_conv.bias)]
        expected, expected_att = numpy_pam(x, *weights, 0.7)
        assert tuple(att.shape) == (2, 35, 35)
        self.assertAllClose(att, expected_att, atol=1e-5, rtol=1e-4)
        self.assertAllClose(out, expected, atol=1e-5, rtol=1e-4)

    def test_scores_in_functional_model(self):
        x = np.random.default_rng(2).normal(size=(2, 7, 5, 16)).astype("float32")
        inputs = keras.Input((None, None, 16))
        outputs = PositionAttention(reduction=8)(inputs, return_attention_scores=True)
        out, att = keras.Model(inputs, outputs)(x)
        assert tuple(out.shape) == (2, 7, 5, 16) and tuple(att.shape) == (2, 35, 35)

    @pytest.mark.filterwarnings("ignore:You are using a softmax")
    # A single position; and batch 3, H = 1, channels not a multiple of the reduction.
    @pytest.mark.parametrize("shape", [(1, 1, 1, 8), (3, 1, 6, 9)])
    def test_identity_at_init_any_size(self, shape):
        x = np.random.default_rng(3).normal(size=shape).astype("float32")
        out = PositionAttention()(x)
        self.assertAllClose(out, x)

    def test_float16_64x64_finite(self, call_compiled):
        # 64x64 (N = 4096): the N x N float32 energies take 64 MiB; 128x128 would take 1 GiB.
        x = (3 * np.random.default_rng(4).normal(size=(1, 64, 64, 16))).astype("float32")
        layer = PositionAttention(dtype="mixed_float16")
        layer.build(x.shape)
        layer.gamma.assign(np.ones((1,), "float32"))
        out = call_compiled(layer, x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))))

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="4-D channels-last"):
            PositionAttention()(np.ones((2, 4, 8), "float32"))
        with pytest.raises(ValueError, match="gives 0 query/key channels"):
            PositionAttention(reduction=8)(np.ones((1, 4, 4, 4), "float32"))
        with pytest.raises(ValueError, match="reduction must be a positive integer"):
            PositionAttention(reduction=0)

import keras
import numpy as np
import pytest

from keras_segattn.layers import EfficientAttention
from keras_segattn.testing import TestCase

def _numpy_heads(x, layer):
    """Float64 ``(flat input, q, k, v per head (B, heads, N, d), reprojection)`` of the layer."""
    w = {name: [keras.ops.convert_to_numpy(v).astype("float64") for v in (conv.kernel, conv.bias)]
         for name, conv in (("k", layer.key_proj), ("q", layer.query_proj),
                            ("v", layer.value_proj), ("r", layer.reprojection))}
    b, h, wd, c = x.shape
    flat = x.reshape(b, h * wd, c).astype("float64")
    q, k, v = (flat @ w[name][0][0, 0] + w[name][1] for name in ("q", "k", "v"))
    q, k, v = (t.reshape(b, h * wd, layer.num_heads, -1).transpose(0, 2, 1, 3) for t in (q, k, v))
    return flat, q, k, v, w["r"]


def _numpy_output(x, flat, attended, reprojection):
    """Heads ``(B, heads, N, dv/h)`` -> reprojection + residual, ``(B, H, W, C)``."""
    b, heads, n, _ = attended.shape
    out = attended.transpose(0, 2, 1, 3).reshape(b, n, -1)
    out = out @ reprojection[0][0, 0] + reprojection[1] + flat
    return out.reshape(x.shape)


def numpy_dot_product_attention(x, layer):
    """Multi-head dot-product attention with 1/N normalisation: (Q K^T / N) V per head."""
    flat, q, k, v, reprojection = _numpy_heads(x, layer)
    n = flat.shape[1]
    return _numpy_output(x, flat, (q @ k.transpose(0, 1, 3, 2) / n) @ v, reprojection)


def numpy_efficient_attention(x, layer):
    """The reference's softmax path in float64, the value bias added to V (as upstream)."""
    flat, q, k, v, reprojection = _numpy_heads(x, layer)
    k = np.exp(k - k.max(axis=2, keepdims=True))
    k = k / k.sum(axis=2, keepdims=True)  # over positions
    q = np.exp(q - q.max(axis=3, keepdims=True))
    q = q / q.sum(axis=3, keepdims=True)  # over the head's channels
    return _numpy_output(x, flat, q @ (k.transpose(0, 1, 3, 2) @ v), reprojection)


class TestEfficientAttention(TestCase):
    # (key_channels, value_channels): (8, 4) projects the values (N x dv), (4, 8) and equal
    # channels project the keys' sums of the input instead ((K^T X) W_v, dk x dv)
    @pytest.mark.parametrize("channels", [(8, 4), (4, 8)])
    @pytest.mark.parametrize("num_heads", [1, 2])
    def test_softmax_path_with_large_value_bias(self, num_heads, channels):
        # The layer adds the value bias to the dk x dv context (K^T 1 = 1); the output is
        # linear in that bias, so agreement at a large random bias also pins its gradient.
        rng = np.random.default_rng(3)
        x = rng.normal(size=(2, 7, 5, 6)).astype("float32")
        layer = EfficientAttention(*channels, num_heads=num_heads)
        layer(x)
        layer.value_proj.bias.assign(rng.normal(0, 5, size=(channels[1],)).astype("float32"))
        self.assertAllClose(layer(x), numpy_efficient_attention(x, layer), atol=1e-4, rtol=1e-4)


    def test_matches_cmsflash_golden(self, load_golden, check_golden):
        kwargs = load_golden("efficient_attention")[0]["constructor_kwargs"]
        layer = EfficientAttention(
            key_channels=kwargs["key_channels"], value_channels=kwargs["value_channels"],
            num_heads=kwargs["head_count"],
        )
        _, arrays = check_golden("efficient_attention", layer)
        assert arrays["input"].shape[-1] == kwargs["in_channels"]

    def test_layer_contract(self):
        # The golden case's configuration and shape (its eager ops are compiled already).
        x = np.random.default_rng(0).normal(size=(2, 7, 9, 24)).astype("float32")
        self.run_layer_test(
            EfficientAttention, {"key_channels": 16, "value_channels": 16, "num_heads": 2}, x,
            expected_output_shape=(2, 7, 9, 24),
        )

    @pytest.mark.parametrize("channels", [(8, 4), (4, 8)])
    @pytest.mark.parametrize("num_heads", [1, 2])
    def test_scaling_equals_dot_product_attention(self, num_heads, channels):
        # With the scaling the key sums are not 1: the value bias enters as (K^T 1) b^T.
        rng = np.random.default_rng(1)
        x = rng.normal(size=(2, 7, 5, 6)).astype("float32")
        layer = EfficientAttention(*channels, num_heads=num_heads, normalization="scaling")
        layer(x)
        layer.value_proj.bias.assign(rng.normal(0, 2, size=(channels[1],)).astype("float32"))
        out = layer(x)
        self.assertAllClose(out, numpy_dot_product_attention(x, layer), atol=1e-5, rtol=1e-4)

    @pytest.mark.filterwarnings("ignore:You are using a softmax")
    def test_odd_and_tiny_sizes(self):
        layer = EfficientAttention(8, 4, num_heads=4)
        for shape in [(1, 1, 1, 6), (2, 7, 5, 6)]:
            out = layer(np.random.default_rng(2).normal(size=shape).astype("float32"))
            assert tuple(out.shape) == shape

    def test_float16_128x128_finite(self, call_compiled):
        x = (3 * np.random.default_rng(4).normal(size=(1, 128, 128, 16))).astype("float32")
        out = call_compiled(EfficientAttention(16, 16, num_heads=2, dtype="mixed_float16"), x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))))

    def test_bad_arguments_and_inputs(self):
        with pytest.raises(ValueError, match="num_heads=3 must divide key_channels=16"):
            EfficientAttention(16, 15, num_heads=3)
        with pytest.raises(ValueError, match="num_heads=2 must divide value_channels=5"):
            EfficientAttention(16, 5, num_heads=2)
        with pytest.raises(ValueError, match="key_channels must be a positive integer"):
            EfficientAttention(0, 4)
        with pytest.raises(ValueError, match="normalization must be one of"):
            EfficientAttention(4, 4, normalization="l2")
        with pytest.raises(ValueError, match="4-D channels-last"):
            EfficientAttention(4, 4)(np.ones((2, 4, 8), "float32"))

import keras
import numpy as np
import pytest

from keras_segattn.layers import SqueezeAttention
from keras_segattn.layers.squeeze_attention import average_pool_ceil
from keras_segattn.testing import TestCase


def _np(v):
    return keras.ops.convert_to_numpy(v)


def _np_cbr(x, block):
    """NumPy 3x3 'same' conv + bias -> eval BN -> ReLU."""
    kernel, b = _np(block.conv.kernel), _np(block.conv.bias)
    h, w = x.shape[1:3]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = sum(xp[:, i:i + h, j:j + w] @ kernel[i, j] for i in range(3) for j in range(3)) + b
    bn = block.norm
    y = (y - _np(bn.moving_mean)) / np.sqrt(_np(bn.moving_variance) + bn.epsilon) * _np(bn.gamma) + _np(bn.beta)
    return np.maximum(y, 0)


def _np_pool(x, p):
    b, h, w, c = x.shape
    out = np.zeros((b, -(-h // p), -(-w // p), c))
    for a in range(out.shape[1]):
        for bb in range(out.shape[2]):
            out[:, a, bb] = x[:, a * p:(a + 1) * p, bb * p:(bb + 1) * p].mean(axis=(1, 2))
    return out


def _np_squeeze_attention(x, layer):
    res = _np_cbr(_np_cbr(x, layer.res_convs[0]), layer.res_convs[1])
    att = _np_cbr(_np_cbr(_np_pool(x, 2), layer.attn_convs[0]), layer.attn_convs[1])
    att = 1 / (1 + np.exp(-att))
    h, w = x.shape[1:3]
    att = att[:, np.arange(h) // 2][:, :, np.arange(w) // 2]  # pixel -> its pooling window
    return att * res + att


class TestSqueezeAttention(TestCase):
    @pytest.mark.parametrize("shape", [(2, 7, 5, 3), (1, 1, 4, 3)])
    def test_matches_numpy_formula(self, shape):
        rng = np.random.default_rng(0)
        x = rng.normal(size=shape).astype("float32")
        layer = SqueezeAttention(4)
        layer(x)
        for var in layer.weights:
            if "moving_variance" in var.path or "gamma" in var.path:
                var.assign(rng.uniform(0.5, 1.5, var.shape).astype("float32"))
            elif "moving_mean" in var.path or "beta" in var.path or "bias" in var.path:
                var.assign(rng.normal(0, 0.2, var.shape).astype("float32"))
        self.assertAllClose(
            layer(x, training=False), _np_squeeze_attention(x.astype("float64"), layer), atol=1e-5, rtol=1e-4
        )

    def test_pool_matches_torch_ceil_mode(self):
        x = np.random.default_rng(1).normal(size=(2, 7, 9, 3)).astype("float32")
        if keras.backend.backend() == "torch":
            import torch

            expected = torch.nn.AvgPool2d(3, ceil_mode=True)(torch.tensor(x).permute(0, 3, 1, 2))
            expected = expected.permute(0, 2, 3, 1).numpy()
        else:
            # Importing torch costs ~5 s of CPU on the other backends; the torch run checks
            # torch itself, and the NumPy reference has the same semantics.
            expected = _np_pool(x.astype("float64"), 3)
        self.assertAllClose(average_pool_ceil(x, 3), expected, atol=1e-6)

    def test_layer_contract(self):
        x = np.random.default_rng(1).normal(size=(2, 7, 5, 3)).astype("float32")
        self.run_layer_test(
            SqueezeAttention, {"filters": 4, "interpolation": "bilinear"}, x,
            expected_output_shape=(2, 7, 5, 4),
        )

    def test_bad_arguments_and_inputs(self):
        with pytest.raises(ValueError, match="interpolation must be"):
            SqueezeAttention(4, interpolation="bicubic")
        with pytest.raises(ValueError, match="pool_size must be"):
            SqueezeAttention(4, pool_size=0)
        with pytest.raises(ValueError, match="4-D"):
            SqueezeAttention(4)(np.ones((2, 8, 8), "float32"))

import keras
import numpy as np
import pytest

from keras_segattn import convert
from keras_segattn.layers import NonLocalBlock
from keras_segattn.testing import TestCase


def mmcv_state_dict(channels, inter, rng):
    """Random parameters under mmcv NonLocal2d's state-dict keys, in torch layout."""
    def conv_w(out, inp):
        return (rng.normal(size=(out, inp, 1, 1)) / np.sqrt(inp)).astype("float32")

    state = {}
    for name in ("g", "theta", "phi"):
        state[f"{name}.conv.weight"] = conv_w(inter, channels)
        state[f"{name}.conv.bias"] = rng.normal(0, 0.2, size=inter).astype("float32")
    state["conv_out.conv.weight"] = conv_w(channels, inter)
    state["conv_out.bn.weight"] = rng.uniform(0.5, 1.5, size=channels).astype("float32")
    state["conv_out.bn.bias"] = rng.normal(0, 0.2, size=channels).astype("float32")
    state["conv_out.bn.running_mean"] = rng.normal(0, 0.2, size=channels).astype("float32")
    state["conv_out.bn.running_var"] = rng.uniform(0.5, 1.5, size=channels).astype("float32")
    state["conv_out.bn.num_batches_tracked"] = np.array(7)
    return state


def numpy_non_local(x, state, use_scale=True):
    """Independent float64 mmcv NonLocal2d (embedded Gaussian), eval-mode BN eps 1e-5."""
    b, h, w, c = x.shape
    flat = x.reshape(b, h * w, c).astype("float64")

    def conv(name, t):
        weight = state[f"{name}.conv.weight"][:, :, 0, 0].astype("float64")  # (out, in)
        bias = state.get(f"{name}.conv.bias", 0.0)
        return t @ weight.T + bias

    theta, phi, g = conv("theta", flat), conv("phi", flat), conv("g", flat)
    pairwise = theta @ phi.transpose(0, 2, 1)
    if use_scale:
        pairwise /= np.sqrt(theta.shape[-1])
    att = np.exp(pairwise - pairwise.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    y = conv("conv_out", att @ g)
    bn = {k: state[f"conv_out.bn.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
    y = (y - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-5) * bn["weight"] + bn["bias"]
    return (flat + y).reshape(b, h, w, c), att


class TestNonLocalBlock(TestCase):
    @pytest.mark.parametrize("use_scale", [True, False])
    def test_matches_numpy_mmcv_formula(self, use_scale):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(2, 7, 5, 8)).astype("float32")  # the contract test's shape
        state = mmcv_state_dict(8, 4, rng)
        layer = NonLocalBlock(reduction=2, use_scale=use_scale)
        layer(x)
        assert sorted(layer.reference_weight_mapping()) == sorted(
            k for k in state if "num_batches" not in k
        )
        convert.load_reference_weights(layer, state)
        out, att = layer(x, training=False, return_attention_scores=True)
        expected, expected_att = numpy_non_local(x, state, use_scale)
        assert tuple(att.shape) == (2, 35, 35)
        self.assertAllClose(att, expected_att, atol=1e-6, rtol=1e-4)
        self.assertAllClose(out, expected, atol=1e-5, rtol=1e-4)

    @pytest.mark.filterwarnings("ignore:You are using a softmax")
    # The contract test's shape; a single position with 3 // 2 = 1 inner channel.
    @pytest.mark.parametrize("shape", [(2, 7, 5, 8), (1, 1, 1, 3)])
    def test_identity_at_init(self, shape):
        # BN gamma (and beta) start at zero, so z = x + 0 in training and in inference.
        x = np.random.default_rng(1).normal(size=shape).astype("float32")
        layer = NonLocalBlock()
        self.assertAllClose(layer(x, training=False), x)
        self.assertAllClose(layer(x, training=True), x)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.norm_out.gamma), 0.0)

    def test_layer_contract(self):
        x = np.random.default_rng(2).normal(size=(2, 7, 5, 8)).astype("float32")
        self.run_layer_test(
            NonLocalBlock, {"reduction": 2, "use_scale": True}, x,
            expected_output_shape=(2, 7, 5, 8), run_training_check=True,
        )

    def test_float16_64x64_finite(self, call_compiled):
        # 64x64 (N = 4096): the N x N float32 energies take 64 MiB; 128x128 would take 1 GiB.
        x = (3 * np.random.default_rng(3).normal(size=(1, 64, 64, 16))).astype("float32")
        layer = NonLocalBlock(dtype="mixed_float16")
        layer.build(x.shape)
        layer.norm_out.gamma.assign(np.ones((16,), "float32"))
        out = call_compiled(layer, x, training=False)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))))

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="4-D channels-last"):
            NonLocalBlock()(np.ones((2, 4, 8), "float32"))
        with pytest.raises(ValueError, match="gives 0 inner channels"):
            NonLocalBlock(reduction=4)(np.ones((1, 4, 4, 3), "float32"))
        with pytest.raises(ValueError, match="reduction must be a positive integer"):
            NonLocalBlock(reduction=1.5)

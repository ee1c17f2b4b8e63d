import keras
import numpy as np
import pytest

from keras_segattn.layers import InterlacedSparseAttention, ISASelfAttention
from keras_segattn.testing import TestCase

def _np(v):
    return keras.ops.convert_to_numpy(v)


def _np_cba(x, block):
    """NumPy 1x1 conv (no bias) -> eval BN -> activation."""
    y = x @ _np(block.conv.kernel)[0, 0]
    bn = block.norm
    y = (y - _np(bn.moving_mean)) / np.sqrt(_np(bn.moving_variance) + bn.epsilon)
    y = y * _np(bn.gamma) + _np(bn.beta)
    return np.maximum(y, 0) if block.activation == "relu" else np.where(y > 0, y, 0.01 * y)


def _np_self_attention(x, sa):
    """Dense attention of one group: x (N, C) -> (N, O)."""
    q, k = x, x
    for conv in sa.query_convs:
        q = _np_cba(q, conv)
    for conv in sa.key_convs:
        k = _np_cba(k, conv)
    v = x @ _np(sa.value_conv.kernel)[0, 0]
    e = q @ k.T * sa.key_channels ** -0.5
    a = np.exp(e - e.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    return _np_cba(a @ v, sa.out_conv)


def _np_isa(x, layer):
    """Independent ISA: explicit index sets per group (no reshapes)."""
    b, h, w, c = x.shape
    ph, pw = layer.down_factor
    qh, qw = -(-h // ph), -(-w // pw)
    top, left = (qh * ph - h) // 2, (qw * pw - w) // 2
    xp = np.zeros((b, qh * ph, qw * pw, c))
    xp[:, top:top + h, left:left + w] = x
    out = layer.long_range.output_channels
    mid = np.zeros((b, qh * ph, qw * pw, out))
    for n in range(b):
        for p in range(ph):
            for q in range(pw):
                rows, cols = np.meshgrid(np.arange(qh) * ph + p, np.arange(qw) * pw + q, indexing="ij")
                mid[n, rows.ravel(), cols.ravel()] = _np_self_attention(
                    xp[n, rows.ravel(), cols.ravel()], layer.long_range
                )
    res = np.zeros_like(mid)
    for n in range(b):
        for a in range(qh):
            for bb in range(qw):
                block = mid[n, a * ph:(a + 1) * ph, bb * pw:(bb + 1) * pw].reshape(-1, out)
                res[n, a * ph:(a + 1) * ph, bb * pw:(bb + 1) * pw] = _np_self_attention(
                    block, layer.short_range
                ).reshape(ph, pw, out)
    return res[:, top:top + h, left:left + w]


def _randomise_bn(layer, rng):
    for var in layer.weights:
        if "moving_variance" in var.path or "gamma" in var.path:
            var.assign(rng.uniform(0.5, 1.5, var.shape).astype("float32"))
        elif "moving_mean" in var.path or "beta" in var.path:
            var.assign(rng.normal(0, 0.2, var.shape).astype("float32"))


class TestInterlacedSparseAttention(TestCase):
    def test_golden_isa_block(self, load_golden, check_golden):
        kw = load_golden("isa_block")[0]["constructor_kwargs"]
        layer = InterlacedSparseAttention(
            kw["key_channels"], kw["value_channels"], kw["out_channels"],
            down_factor=tuple(kw["down_factor"]),
        )
        check_golden("isa_block", layer)

    @pytest.mark.parametrize(
        "shape, factor, activation",
        [((2, 7, 5, 6), (3, 2), "relu"), ((1, 2, 3, 6), (4, 4), "leaky_relu")],
    )
    @pytest.mark.filterwarnings("ignore:You are using a softmax over axis")
    def test_matches_dense_attention_inside_groups(self, shape, factor, activation):
        rng = np.random.default_rng(0)
        x = rng.normal(size=shape).astype("float32")
        layer = InterlacedSparseAttention(4, 5, 3, down_factor=factor, activation=activation)
        layer(x)
        _randomise_bn(layer, rng)
        self.assertAllClose(layer(x, training=False), _np_isa(x.astype("float64"), layer), atol=1e-5, rtol=1e-4)

    def test_layer_contract(self):
        # The golden case's configuration and shape (padded 10 x 9 -> 12 x 12): the eager
        # ops compiled by the golden test are reused (JAX compiles per shape and dtype).
        x = np.random.default_rng(1).normal(size=(2, 10, 9, 16)).astype("float32")
        self.run_layer_test(
            InterlacedSparseAttention,
            {"key_channels": 8, "value_channels": 12, "down_factor": (4, 4)},
            x, expected_output_shape=(2, 10, 9, 16),
        )

    def test_self_attention_block_contract(self):
        x = np.random.default_rng(2).normal(size=(2, 3, 5, 4)).astype("float32")
        self.run_layer_test(
            ISASelfAttention, {"key_channels": 4, "value_channels": 6, "output_channels": 3},
            x, expected_output_shape=(2, 3, 5, 3), run_saving_check=False, run_precision_checks=False,
        )

    def test_float16_large_map_is_finite(self, call_compiled):
        x = np.random.default_rng(3).normal(size=(1, 128, 128, 4)).astype("float32") * 4
        layer = InterlacedSparseAttention(4, 4, down_factor=(8, 8), dtype="mixed_float16")
        y = call_compiled(layer, x)
        assert keras.backend.standardize_dtype(y.dtype) == "float16"
        assert np.all(np.isfinite(_np(keras.ops.cast(y, "float32"))))

    def test_bad_arguments_and_inputs(self):
        with pytest.raises(ValueError, match="down_factor must be"):
            InterlacedSparseAttention(4, 4, down_factor=(0, 4))
        with pytest.raises(ValueError, match="activation must be one of"):
            InterlacedSparseAttention(4, 4, activation="gelu")
        with pytest.raises(ValueError, match="4-D"):
            InterlacedSparseAttention(4, 4)(np.ones((2, 8, 8), "float32"))
        with pytest.raises(ValueError, match="positive int"):
            ISASelfAttention(0, 4, 4)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.compile's recompilation")
def test_torch_compile_of_a_padded_size_compiles_once():
    """A size the groups do not divide (11x13 with 4x4 groups: padded to 12x16) compiles
    once under ``torch.compile``: ``keras.ops.pad`` made a ``Pad`` operation per call whose
    unique name advanced a global counter that dynamo guards on, so every call recompiled
    (and after eight ran eagerly). The compiled output equals the eager one."""
    import torch

    layer = InterlacedSparseAttention(8, 16, down_factor=(4, 4))
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(1, 11, 13, 16)).astype("float32"))
    eager = keras.ops.convert_to_numpy(layer(x, training=False))
    torch._dynamo.reset()
    compiled = torch.compile(lambda inputs: layer(inputs, training=False), dynamic=False)
    compiled(x)
    torch._dynamo.config.error_on_recompile = True
    try:
        outputs = [compiled(x) for _ in range(3)]
    finally:
        torch._dynamo.config.error_on_recompile = False
        torch._dynamo.reset()
    for output in outputs:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(output), eager, atol=1e-5,
                                   rtol=1e-5)

"""Under mixed precision the attention layers keep the energies and the softmax in float32
but run the products with the soft-maxed (convex) weights in the compute dtype, so that the
largest matmuls use float16/bfloat16 (issue: no float32 fall-back where it is not needed).

Every ``keras.ops.matmul``/``einsum`` between two activations (both of rank >= 3: the 1x1
projections, activation @ kernel, are left out) and every ``keras.ops.softmax`` is recorded
during an eager call; the test checks the dtypes and the share of multiply-adds done in the
16-bit compute dtype, computed from the recorded shapes.
"""

import math

import keras
import numpy as np
import pytest

from keras_segattn import layers

# (layer factory, smallest expected share of the attention products' multiply-adds in 16 bit)
CASES = {
    # energies N^2 C/8 in float32, A V N^2 C in 16 bit: 8/9
    "PositionAttention": (lambda dtype: layers.PositionAttention(dtype=dtype), 8 / 9),
    # X X^T and A X: C^2 N each
    "ChannelAttention": (lambda dtype: layers.ChannelAttention(dtype=dtype), 1 / 2),
    # theta phi^T and A g: N^2 C' each
    "NonLocalBlock": (lambda dtype: layers.NonLocalBlock(dtype=dtype), 1 / 2),
    # energies (H + W) N C/8, products (H + W) N C: 8/9
    "CrissCrossAttention": (lambda dtype: layers.CrissCrossAttention(dtype=dtype), 8 / 9),
    # x desc and A x in both branches: equal
    "FullyAttentional": (lambda dtype: layers.FullyAttentional(dtype=dtype), 1 / 2),
    # Q K^T (d = C/2) and A V (C_v = C): 2/3
    "InterlacedSparseAttention": (
        lambda dtype: layers.InterlacedSparseAttention(8, 16, down_factor=(2, 2), dtype=dtype),
        2 / 3),
    # K^T X and Q^ (G W_r), N dk C each, in 16 bit; G W_r, dk dv C, in float32 (N = 64,
    # dv = 16): 2N / (2N + dv) = 8/9
    "EfficientAttention": (lambda dtype: layers.EfficientAttention(8, 16, dtype=dtype), 8 / 9),
}


def multiply_adds(subscripts, a, b):
    inputs = subscripts.split("->")[0].split(",")
    sizes = {}
    for letters, shape in zip(inputs, (a.shape, b.shape)):
        sizes.update(zip(letters, shape))
    return math.prod(sizes.values())


@pytest.fixture
def recorded(monkeypatch):
    calls = {"products": [], "softmax": []}
    matmul, einsum, softmax = keras.ops.matmul, keras.ops.einsum, keras.ops.softmax

    def dtype(x):
        return keras.backend.standardize_dtype(x.dtype)

    def recording_matmul(a, b):
        out = matmul(a, b)
        if len(a.shape) >= 3 and len(b.shape) >= 3:
            macs = math.prod(out.shape) * a.shape[-1]
            calls["products"].append((dtype(a), dtype(b), macs))
        return out

    def recording_einsum(subscripts, a, b):
        out = einsum(subscripts, a, b)
        calls["products"].append((dtype(a), dtype(b), multiply_adds(subscripts, a, b)))
        return out

    def recording_softmax(x, axis=-1):
        calls["softmax"].append(dtype(x))
        return softmax(x, axis=axis)

    monkeypatch.setattr(keras.ops, "matmul", recording_matmul)
    monkeypatch.setattr(keras.ops, "einsum", recording_einsum)
    monkeypatch.setattr(keras.ops, "softmax", recording_softmax)
    return calls


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_energies_float32_products_in_compute_dtype(name, policy, recorded):
    factory, minimum_share = CASES[name]
    low = policy.split("_")[1]
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 32)).astype("float32")
    out = factory(policy)(x)
    assert keras.backend.standardize_dtype(out.dtype) == low
    assert recorded["softmax"] and set(recorded["softmax"]) == {"float32"}
    products = recorded["products"]
    assert products, f"{name}: no attention product recorded"
    for a, b, _ in products:
        assert a == b and a in ("float32", low), products  # no silent up-casting of one side
    share = sum(m for a, _, m in products if a == low) / sum(m for *_, m in products)
    assert share >= minimum_share - 1e-9, (name, share, products)


def test_float32_policy_is_all_float32(recorded):
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 32)).astype("float32")
    layers.PositionAttention()(x)
    assert {a for a, _, _ in recorded["products"]} == {"float32"}

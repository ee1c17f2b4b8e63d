"""``project_weighted_sums`` (EfficientAttention's and LinearPositionAttention's values):
the 1x1 convolution's projection of weighted sums of its input equals the same weighted sums
of the projected input, computed in float64 NumPy, for one head and for several, with the
weights' totals given, as a scalar, and left out for weights that sum to one.
"""

import keras
import numpy as np
import pytest

from keras_segattn.layers._common import project_weighted_sums

B, N, K, C, F = 2, 9, 3, 5, 6


def conv_and_weights(seed=0, use_bias=True):
    rng = np.random.default_rng(seed)
    conv = keras.layers.Conv2D(F, 1, use_bias=use_bias)
    conv.build((None, 3, 3, C))
    conv.kernel.assign(rng.normal(size=(1, 1, C, F)))
    if use_bias:
        conv.bias.assign(rng.normal(size=(F,)))
    inputs = rng.normal(size=(B, N, C))
    weights = rng.normal(size=(B, N, K))
    return conv, inputs, weights


def projected_values(conv, inputs):
    """float64 ``x W + b`` per position: (B, N, F)."""
    kernel = keras.ops.convert_to_numpy(conv.kernel).astype("float64")[0, 0]
    bias = keras.ops.convert_to_numpy(conv.bias).astype("float64") if conv.use_bias else 0.0
    return inputs @ kernel + bias


@pytest.mark.parametrize("use_bias", [True, False])
def test_one_head_equals_the_weighted_sums_of_the_projected_input(use_bias):
    conv, inputs, weights = conv_and_weights(use_bias=use_bias)
    expected = np.einsum("bnk,bnf->bkf", weights, projected_values(conv, inputs))
    sums = np.einsum("bnk,bnc->bkc", weights, inputs).astype("float32")
    totals = weights.sum(axis=1).astype("float32")
    got = project_weighted_sums(conv, sums, totals)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5, atol=1e-5)


def test_heads_project_their_own_output_channels():
    heads = 2
    conv, inputs, _ = conv_and_weights(seed=1)
    weights = np.random.default_rng(2).normal(size=(B, N, heads, K))
    values = projected_values(conv, inputs).reshape(B, N, heads, F // heads)
    expected = np.einsum("bnhk,bnhv->bhkv", weights, values)
    sums = np.einsum("bnhk,bnc->bhkc", weights, inputs).astype("float32")
    totals = weights.sum(axis=1).astype("float32")
    got = project_weighted_sums(conv, sums, totals, heads=heads)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5, atol=1e-5)


def test_weights_summing_to_one_need_no_totals():
    conv, inputs, weights = conv_and_weights(seed=3)
    weights = np.exp(weights) / np.exp(weights).sum(axis=1, keepdims=True)  # soft-max over N
    expected = np.einsum("bnk,bnf->bkf", weights, projected_values(conv, inputs))
    sums = np.einsum("bnk,bnc->bkc", weights, inputs).astype("float32")
    got = project_weighted_sums(conv, sums)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5, atol=1e-5)


def test_a_scalar_total_is_shared_by_every_sum():
    conv, inputs, _ = conv_and_weights(seed=4)
    expected = projected_values(conv, inputs).sum(axis=1, keepdims=True)  # every weight 1
    sums = inputs.sum(axis=1, keepdims=True).astype("float32")
    got = project_weighted_sums(conv, sums, keras.ops.convert_to_tensor(float(N)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5, atol=1e-5)

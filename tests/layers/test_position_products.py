"""The products over positions with written-out gradients: ``gram_matrix``
(DANet's channel energies), ``sum_over_positions`` and LinearChannelAttention's sum of
squares. Values and input gradients against float64 NumPy on every backend (through the
written-out gradients where a backend has them, else its own autodiff).
"""

import numpy as np
import pytest

from keras_segattn.layers._common import gram_matrix, sum_over_positions
from keras_segattn.layers.linear_attention import _sum_of_squares
from keras_segattn.testing import assert_allclose, gradient_weights, values_and_input_gradient

# D != C and N > both, so that a transposed operand in the wrong place fails.
B, N, D, C = 2, 7, 3, 4


# One product below 256 channels, the three distinct blocks of X^T X from 256 on.
@pytest.mark.parametrize("channels", [C, 256])
def test_gram_matrix_and_its_gradient(channels):
    x = np.random.default_rng(0).normal(size=(B, N, channels)).astype("float32")
    y, grad = values_and_input_gradient(gram_matrix, x)
    x64 = x.astype("float64")
    w = gradient_weights((B, channels, channels))
    assert_allclose(y, x64.transpose(0, 2, 1) @ x64, atol=1e-5, rtol=1e-5)
    # E[c, d] = sum_n x[n, c] x[n, d]:  dL/dx = x (W + W^T), a sum over the channels
    # (float32 rounding grows with their number)
    atol = 1e-5 * max(1, channels // 32)
    assert_allclose(grad, x64 @ (w + w.transpose(0, 2, 1)), atol=atol, rtol=1e-5)


def test_sum_over_positions_and_its_gradients():
    x = np.random.default_rng(1).normal(size=(B, N, D + C)).astype("float32")
    y, grad = values_and_input_gradient(
        lambda x: sum_over_positions(x[..., :D], x[..., D:]), x)
    a, b = x[..., :D].astype("float64"), x[..., D:].astype("float64")
    w = gradient_weights((B, D, C))
    assert_allclose(y, a.transpose(0, 2, 1) @ b, atol=1e-5, rtol=1e-5)
    # E = a^T b:  dL/da = b W^T, dL/db = a W
    expected = np.concatenate([b @ w.transpose(0, 2, 1), a @ w], axis=-1)
    assert_allclose(grad, expected, atol=1e-5, rtol=1e-5)


def test_sum_of_squares_and_its_gradient():
    x = np.random.default_rng(2).normal(size=(B, N, C)).astype("float32")
    y, grad = values_and_input_gradient(_sum_of_squares, x)
    x64 = x.astype("float64")
    assert_allclose(y, (x64**2).sum(-1, keepdims=True), atol=1e-5, rtol=1e-5)
    assert_allclose(grad, 2 * x64 * gradient_weights((B, N, 1)), atol=1e-5, rtol=1e-5)

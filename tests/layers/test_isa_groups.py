"""ISA's grouping (``to_groups``) and its inverse (``from_groups``): values and input
gradients against NumPy loops over the padded map, for both orders (long range: one group
per offset in the blocks; short range: one group per block), on every backend (through the
written-out gradients on TensorFlow, each function's gradient being the other)."""

import numpy as np
import pytest

from keras_segattn.layers.interlaced_sparse_attention import from_groups, to_groups
from keras_segattn.testing import assert_allclose, gradient_weights, values_and_input_gradient

# 10 x 9 in blocks of 4 x 4: padded to 12 x 12, top 1 and left 1 (the rest after).
B, H, W, C = 2, 10, 9, 3
PH, PW = 4, 4
QH, QW, TOP, LEFT = 3, 3, 1, 1


def group_index(b, a, p, bb, q, long_range):
    """(group, row, column) of pixel (a P_h + p, bb P_w + q) of image b."""
    if long_range:
        return (b * PH + p) * PW + q, a, bb
    return (b * QH + a) * QW + bb, p, q


def grouped(image):
    """NumPy ``to_groups``: image (B, H, W, C) -> (long range, short range) groups."""
    padded = np.zeros((B, QH * PH, QW * PW, C))
    padded[:, TOP:TOP + H, LEFT:LEFT + W] = image
    result = {True: np.zeros((B * PH * PW, QH, QW, C)), False: np.zeros((B * QH * QW, PH, PW, C))}
    for long_range, groups in result.items():
        for b in range(B):
            for a in range(QH):
                for p in range(PH):
                    for bb in range(QW):
                        for q in range(PW):
                            groups[group_index(b, a, p, bb, q, long_range)] = (
                                padded[b, a * PH + p, bb * PW + q])
    return result


def ungrouped(groups, long_range):
    """NumPy ``from_groups``: the padded map of the groups, cropped."""
    padded = np.zeros((B, QH * PH, QW * PW, C))
    for b in range(B):
        for a in range(QH):
            for p in range(PH):
                for bb in range(QW):
                    for q in range(PW):
                        padded[b, a * PH + p, bb * PW + q] = (
                            groups[group_index(b, a, p, bb, q, long_range)])
    return padded[:, TOP:TOP + H, LEFT:LEFT + W]


@pytest.mark.parametrize("long_range", [True, False])
def test_to_groups_and_its_gradient(long_range):
    x = np.random.default_rng(0).normal(size=(B, H, W, C)).astype("float32")
    y, grad = values_and_input_gradient(lambda x: to_groups(x, (PH, PW), long_range), x)
    assert_allclose(y, grouped(x.astype("float64"))[long_range], atol=0, rtol=0)
    # the gradient of the grouping is the inverse grouping of the upstream gradient
    w = gradient_weights(tuple(y.shape))
    assert_allclose(grad, ungrouped(w, long_range), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("long_range", [True, False])
def test_from_groups_and_its_gradient(long_range):
    shape = (B * PH * PW, QH, QW, C) if long_range else (B * QH * QW, PH, PW, C)
    groups = np.random.default_rng(1).normal(size=shape).astype("float32")
    y, grad = values_and_input_gradient(
        lambda g: from_groups(g, H, W, (PH, PW), long_range), groups)
    assert_allclose(y, ungrouped(groups.astype("float64"), long_range), atol=0, rtol=0)
    # the gradient is the upstream gradient zero-padded and grouped (padding gets none)
    w = gradient_weights((B, H, W, C))
    assert_allclose(grad, grouped(w)[long_range], atol=1e-6, rtol=1e-6)
    assert_allclose(from_groups(to_groups(y, (PH, PW), long_range), H, W, (PH, PW),
                                long_range), y, atol=0, rtol=0)

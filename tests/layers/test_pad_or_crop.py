"""``pad_or_crop_spatial`` (ISA's and the squeeze attention's padding to whole blocks and
ISA's crop back): ``y[i, j] = x[i - top, j - left]`` inside ``x``, zero outside, against
NumPy, for padding, cropping, a mix of both, no change, and unknown spatial sizes.
"""

import keras
import numpy as np
import pytest

from keras_segattn.layers._common import pad_or_crop_spatial
from keras_segattn.testing.test_case import assert_allclose


def expected(x, out_height, out_width, top, left):
    y = np.zeros((x.shape[0], out_height, out_width, x.shape[3]), x.dtype)
    for i in range(out_height):
        for j in range(out_width):
            if 0 <= i - top < x.shape[1] and 0 <= j - left < x.shape[2]:
                y[:, i, j] = x[:, i - top, j - left]
    return y


@pytest.mark.parametrize("out_height, out_width, top, left", [
    (8, 11, 1, 2),     # pad both axes
    (3, 4, -1, -2),    # crop both axes
    (8, 4, 2, -1),     # pad one, crop the other
    (5, 7, 0, 0),      # unchanged
    (6, 7, 0, 0),      # pad at the end of one axis only
])
def test_pad_or_crop_spatial(out_height, out_width, top, left):
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype("float32")
    y = pad_or_crop_spatial(keras.ops.convert_to_tensor(x), out_height, out_width, top, left)
    assert_allclose(y, expected(x, out_height, out_width, top, left))


def test_unknown_sizes_in_a_functional_model():
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Lambda(lambda x: pad_or_crop_spatial(x, 8, 11, 1, 2),
                                  output_shape=(8, 11, 3))(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).normal(size=(2, 5, 7, 3)).astype("float32")
    assert_allclose(model.predict(x, verbose=0), expected(x, 8, 11, 1, 2))

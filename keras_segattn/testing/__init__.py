"""Test helpers shared by keras_segattn's test suite (and usable by extensions)."""

from keras_segattn.testing.test_case import (
    TestCase,
    assert_allclose,
    gradient_weights,
    to_numpy,
    values_and_input_gradient,
)

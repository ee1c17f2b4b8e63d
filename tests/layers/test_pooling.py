"""Our MaxPooling2D (uneven "same" padding done as a -inf pad on torch) equals "same" max
pooling as TensorFlow defines it (the maximum of the window's real elements), written out in
NumPy here: values and input gradients on every backend, compiled training, serialization."""

import keras
import numpy as np
import pytest

from keras_segattn.layers import BatchNormalization, Conv2D, MaxPooling2D
from keras_segattn.testing import TestCase, gradient_weights, values_and_input_gradient


def numpy_same_max_pooling(x, pool_size, strides):
    """TensorFlow's ``padding="same"`` max pooling of a ``(B, H, W, C)`` array, and the
    gradient of ``sum(pool(x) * w)`` for ``w = gradient_weights(...)``, window by window: the
    padding is ``total = max((ceil(n / s) - 1) * s + k - n, 0)``, ``total // 2`` before, and
    a window takes the maximum of its real elements (the gradient goes to that element)."""
    batch, height, width, channels = x.shape
    out_h, out_w = -(-height // strides[0]), -(-width // strides[1])
    top = max((out_h - 1) * strides[0] + pool_size[0] - height, 0) // 2
    left = max((out_w - 1) * strides[1] + pool_size[1] - width, 0) // 2
    y = np.zeros((batch, out_h, out_w, channels), "float64")
    w = gradient_weights(y.shape).astype("float64")
    dx = np.zeros(x.shape, "float64")
    for i in range(out_h):
        for j in range(out_w):
            rows = slice(max(i * strides[0] - top, 0),
                         min(i * strides[0] - top + pool_size[0], height))
            cols = slice(max(j * strides[1] - left, 0),
                         min(j * strides[1] - left + pool_size[1], width))
            window = x[:, rows, cols, :].astype("float64")
            y[:, i, j] = window.max(axis=(1, 2))
            flat = window.reshape(batch, -1, channels)
            winner = flat.argmax(axis=1)  # continuous random inputs: no ties
            mask = np.zeros_like(flat)
            np.put_along_axis(mask, winner[:, None], 1.0, axis=1)
            dx[:, rows, cols, :] += (mask * w[:, i, j][:, None]).reshape(window.shape)
    return y, dx


# (pool size, strides, input shape): uneven totals (the -inf pad on torch) on one axis or
# both, even totals (PyTorch's own symmetric padding), none.
CASES = {
    "3x3/2, even map (the KerasCV stem)": ((3, 3), (2, 2), (2, 8, 6, 3)),
    "3x3/2, odd map": ((3, 3), (2, 2), (1, 7, 9, 2)),
    "3x3/2, even x odd": ((3, 3), (2, 2), (2, 6, 7, 3)),
    "2x2/2, odd map": ((2, 2), (2, 2), (2, 7, 5, 3)),
    "2x2/2, even map": ((2, 2), (2, 2), (1, 6, 8, 2)),
    "3x2/1": ((3, 2), (1, 1), (1, 5, 4, 3)),
    "5x5/3": ((5, 5), (3, 3), (1, 10, 8, 2)),
}


class TestMaxPooling2D(TestCase):
    @pytest.mark.parametrize("case", sorted(CASES))
    def test_equals_tensorflow_same_max_pooling(self, case):
        pool_size, strides, shape = CASES[case]
        layer = MaxPooling2D(pool_size, strides=strides, padding="same")
        x = np.random.default_rng(1).normal(size=shape).astype("float32")
        y, dx = values_and_input_gradient(layer, x)
        y_ref, dx_ref = numpy_same_max_pooling(x, pool_size, strides)
        assert tuple(y.shape) == y_ref.shape
        self.assertAllClose(y, y_ref, atol=1e-6, rtol=1e-6)
        self.assertAllClose(dx, dx_ref, atol=1e-6, rtol=1e-6)

    def test_compiled_training_equals_eager(self):
        """``jit_compile=True`` (torch: ``torch.compile``; XLA elsewhere) trains and predicts
        through the KerasCV-layout stem (7x7 / 2 convolution, our ``BatchNormalization``,
        ReLU, 3x3 / 2 "same" max pooling of the even-sized map) as the eager model does.
        With Keras' ``MaxPooling2D`` Inductor failed on torch at the first step
        (``replication_pad2d_backward``: ``expected ... stride 1==256``)."""
        models = []
        for jit_compile in (True, False):
            keras.utils.set_random_seed(3)
            model = keras.Sequential([
                keras.Input((None, None, 3)),
                Conv2D(8, 7, strides=2, padding="same", use_bias=False),
                BatchNormalization(),
                keras.layers.ReLU(),
                MaxPooling2D(3, strides=2, padding="same"),
                keras.layers.Conv2D(2, 1),
            ])
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse",
                          jit_compile=jit_compile)
            models.append(model)
        rng = np.random.default_rng(5)
        x = rng.normal(size=(2, 16, 12, 3)).astype("float32")
        target = rng.normal(size=(2, 4, 3, 2)).astype("float32")
        for _ in range(2):
            losses = [model.train_on_batch(x, target) for model in models]
            self.assertAllClose(losses[0], losses[1], atol=1e-5, rtol=1e-5)
        predictions = [model.predict_on_batch(x) for model in models]
        self.assertAllClose(predictions[0], predictions[1], atol=1e-5, rtol=1e-5)
        for a, b in zip(models[0].get_weights(), models[1].get_weights()):
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)

    def test_layer_contract(self):
        """Config and ``.keras`` round trips, dynamic spatial sizes, mixed precision."""
        x = np.random.default_rng(2).normal(size=(2, 8, 6, 3)).astype("float32")
        self.run_layer_test(MaxPooling2D, dict(pool_size=3, strides=2, padding="same"), x,
                            expected_output_shape=(2, 4, 3, 3))

    @pytest.mark.parametrize("dtype", ["mixed_float16", "mixed_bfloat16"])
    def test_mixed_precision(self, dtype):
        x = np.random.default_rng(4).normal(size=(1, 8, 6, 3)).astype("float32")
        y = MaxPooling2D(3, strides=2, padding="same", dtype=dtype)(x)
        assert keras.backend.standardize_dtype(y.dtype) == dtype.split("_")[1]
        expected = numpy_same_max_pooling(x, (3, 3), (2, 2))[0]
        self.assertAllClose(keras.ops.cast(y, "float32"), expected, atol=2e-2, rtol=2e-2)

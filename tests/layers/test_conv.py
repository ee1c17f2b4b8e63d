"""Our Conv2D (Keras' layer convolving channels-last memory directly on torch) and the attention
layers' ``pointwise_conv`` equal ``keras.layers.Conv2D`` on every backend: values, input and
kernel gradients, serialization."""

import keras
import numpy as np
import pytest

from keras_segattn.layers import Conv2D
from keras_segattn.layers._common import pointwise_conv, torch_channels_last_weight
from keras_segattn.testing import TestCase, values_and_input_gradient


def with_same_random_weights(ours, theirs, input_shape, seed):
    """``(ours, theirs)``, both built for ``input_shape`` with the same random weights."""
    ours.build(input_shape)
    theirs.build(input_shape)
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=w.shape).astype("float32") for w in theirs.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    return ours, theirs


def twin_convs(input_shape, **kwargs):
    """Ours and Keras' Conv2D with the same random kernel and bias."""
    return with_same_random_weights(Conv2D(**kwargs), keras.layers.Conv2D(**kwargs),
                                    input_shape, seed=0)


# (kwargs, input shape): symmetric "same" (odd kernels, stride 1 or an even total at stride
# 2), uneven "same" (Keras' path on torch), "valid", dilation, groups, bias off, 1x1 (a
# matmul on JAX). On JAX, stride-1 kernels with at least 64 input and output channels take
# the tap-by-tap kernel gradient, "3x3 same" (4 -> 5 channels) XLA's own.
CASES = {
    "3x3 same": (dict(filters=5, kernel_size=3, padding="same"), (2, 9, 7, 4)),
    "3x3 same dilated 2": (dict(filters=64, kernel_size=3, padding="same", dilation_rate=2),
                           (2, 9, 7, 64)),
    "7x7 stride 2 same, even total": (dict(filters=3, kernel_size=7, strides=2, padding="same"),
                                      (1, 9, 11, 3)),
    "3x3 stride 2 same, uneven total": (dict(filters=3, kernel_size=3, strides=2,
                                             padding="same"), (1, 8, 10, 3)),
    "3x3 stride 2 valid, no bias": (dict(filters=6, kernel_size=3, strides=2, use_bias=False),
                                    (2, 9, 8, 4)),
    "1x1 valid": (dict(filters=2, kernel_size=1), (2, 5, 6, 4)),
    "1x1 stride 2 same, odd size": (dict(filters=3, kernel_size=1, strides=2, padding="same"),
                                    (2, 7, 6, 4)),
    "3x3 valid": (dict(filters=64, kernel_size=3), (2, 7, 6, 64)),
    "4x4 same, uneven total": (dict(filters=64, kernel_size=4, padding="same"), (1, 7, 8, 64)),
    "3x3 same dilated 3 on a small map": (dict(filters=64, kernel_size=3, padding="same",
                                                dilation_rate=3), (1, 4, 5, 80)),
    "3x3 groups 2": (dict(filters=4, kernel_size=3, padding="same", groups=2), (1, 6, 6, 4)),
    "5x3 same relu": (dict(filters=64, kernel_size=(5, 3), padding="same", activation="relu"),
                      (1, 7, 6, 64)),
}


class TestConv2D(TestCase):
    @pytest.mark.parametrize("case", sorted(CASES))
    def test_equals_keras_conv2d(self, case):
        kwargs, shape = CASES[case]
        ours, theirs = twin_convs(shape, **kwargs)
        x = np.random.default_rng(1).normal(size=shape).astype("float32")
        y, dx = values_and_input_gradient(ours, x)
        y_ref, dx_ref = values_and_input_gradient(theirs, x)
        assert y.shape == y_ref.shape
        self.assertAllClose(y, y_ref, atol=1e-5, rtol=1e-5)
        self.assertAllClose(dx, dx_ref, atol=1e-4, rtol=1e-5)

    @pytest.mark.parametrize("case", sorted(CASES))
    def test_kernel_gradient_equals_keras(self, case):
        """One SGD step moves both kernels (and biases) alike: the kernel gradient, which the
        JAX path computes tap by tap, equals the one of Keras' convolution."""
        kwargs, shape = CASES[case]
        ours, theirs = twin_convs(shape, **kwargs)
        x = np.random.default_rng(2).normal(size=shape).astype("float32")
        model_ours = keras.Sequential([keras.Input(shape[1:]), ours])
        model_theirs = keras.Sequential([keras.Input(shape[1:]), theirs])
        output_shape = theirs.compute_output_shape(shape)
        target = np.random.default_rng(3).normal(size=output_shape).astype("float32")
        for model in (model_ours, model_theirs):
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
            model.train_on_batch(x, target)
        for a, b in zip(ours.get_weights(), theirs.get_weights()):
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)

    def test_compiled_training_at_several_image_sizes(self):
        """``jit_compile=True`` (torch: ``torch.compile``, XLA elsewhere) trains and predicts
        at one image size, then at two others, and every step equals Keras' convolution's.
        On torch the second size is traced with symbolic sizes, and Inductor failed to
        compile the channels-last convolution there (``cannot determine truth value of
        Relational``): compiled calls take Keras' own path."""
        kwargs = dict(filters=6, kernel_size=3, padding="same")
        ours, theirs = twin_convs((None, None, None, 4), **kwargs)
        models = []
        for conv in (ours, theirs):
            model = keras.Sequential([keras.Input((None, None, 4)), conv])
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=True)
            models.append(model)
        rng = np.random.default_rng(5)
        for height, width in ((8, 8), (12, 10), (10, 12)):
            x = rng.normal(size=(2, height, width, 4)).astype("float32")
            target = rng.normal(size=(2, height, width, 6)).astype("float32")
            losses = [model.train_on_batch(x, target) for model in models]
            predictions = [model.predict_on_batch(x) for model in models]
            self.assertAllClose(losses[0], losses[1], atol=1e-5, rtol=1e-5)
            self.assertAllClose(predictions[0], predictions[1], atol=1e-4, rtol=1e-5)
            for a, b in zip(ours.get_weights(), theirs.get_weights()):
                self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("case", ["3x3 same", "3x3 same dilated 2", "1x1 valid"])
    @pytest.mark.parametrize("dtype", ["mixed_float16", "mixed_bfloat16"])
    def test_mixed_precision(self, dtype, case):
        kwargs, shape = CASES[case]
        ours, theirs = twin_convs(shape, dtype=dtype, **kwargs)
        x = np.random.default_rng(4).normal(size=shape).astype("float32")
        y = ours(x)
        assert keras.backend.standardize_dtype(y.dtype) == dtype.split("_")[1]
        self.assertAllClose(keras.ops.cast(y, "float32"), keras.ops.cast(theirs(x), "float32"),
                            atol=5e-2, rtol=5e-2)

    @pytest.mark.parametrize(
        "kwargs, small_shape, message",
        [
            (dict(filters=8, kernel_size=3), (1, 2, 2, 8), "2x2 is too small for its 3x3 kernel"),
            # 64 channels: the tap-by-tap path on JAX
            (dict(filters=64, kernel_size=3), (1, 2, 5, 64), "output would be 0x3"),
            (dict(filters=64, kernel_size=3, dilation_rate=2), (1, 4, 4, 64),
             r"dilation \(2, 2\).*output would be 0x0"),
            (dict(filters=4, kernel_size=(1, 3), strides=2), (1, 3, 2, 4),
             "output would be 2x0"),
        ],
    )
    def test_too_small_input_for_a_built_layer_is_a_clear_error(self, kwargs, small_shape,
                                                                message):
        """Keras checks the output size only while it builds the layer; afterwards TensorFlow's
        convolution returns garbage of the input's size (Keras' own layer, 2x2 through a 3x3
        "valid" kernel), JAX an empty tensor on our tap path and PyTorch a backend error."""
        layer = Conv2D(**kwargs)
        layer(np.ones((1, 9, 9, small_shape[-1]), "float32"))
        with pytest.raises(ValueError, match=message):
            layer(np.ones(small_shape, "float32"))
        # the smallest input that fits still convolves
        fits = (1, 5, 5, small_shape[-1])
        assert min(layer(np.ones(fits, "float32")).shape[1:3]) >= 1

    def test_keras_round_trip_and_weight_names(self, tmp_path):
        def graph(conv_class):
            inputs = keras.Input((None, None, 3))
            return keras.Model(inputs, conv_class(4, 3, padding="same", name="conv")(inputs))

        ours, plain = graph(Conv2D), graph(keras.layers.Conv2D)
        plain.set_weights([np.random.default_rng(5).normal(size=w.shape).astype("float32")
                           for w in plain.get_weights()])
        weights_path = str(tmp_path / "plain.weights.h5")
        plain.save_weights(weights_path)
        ours.load_weights(weights_path)
        x = np.random.default_rng(6).normal(size=(1, 7, 5, 3)).astype("float32")
        self.assertAllClose(ours(x), plain(x), atol=1e-5, rtol=1e-5)
        path = str(tmp_path / "ours.keras")
        ours.save(path)
        restored = keras.saving.load_model(path)
        assert type(restored.get_layer("conv")) is Conv2D
        assert restored.get_layer("conv").get_config() == plain.get_layer("conv").get_config()
        self.assertAllClose(restored(x), ours(x), atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch path's weight layout")
def test_torch_weight_is_the_kernel_in_channels_last_memory():
    import torch

    kernel = torch.from_numpy(np.random.default_rng(1).normal(size=(3, 5, 4, 6)).astype("float32"))
    weight = torch_channels_last_weight(kernel)
    # PyTorch's (C_out, C_in, kh, kw) weight, the same values as the plain permutation ...
    np.testing.assert_array_equal(weight.numpy(), kernel.permute(3, 2, 0, 1).numpy())
    # ... already in the channels-last memory oneDNN takes (no copy inside the convolution).
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not kernel.permute(3, 2, 0, 1).is_contiguous(memory_format=torch.channels_last)


class _PointwiseLayer(keras.layers.Layer):
    """A built 1x1 ``keras.layers.Conv2D`` applied through ``pointwise_conv``."""

    def __init__(self, conv, add_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.conv, self.add_bias = conv, add_bias

    def call(self, x):
        return pointwise_conv(self.conv, x, self.add_bias)


def twin_pointwise(shape, filters, **kwargs):
    """A 1x1 ``keras.layers.Conv2D`` called as a layer, and a copy called by
    ``pointwise_conv`` (torch: PyTorch's channels-last convolution; elsewhere a 2-D matmul)."""
    return with_same_random_weights(keras.layers.Conv2D(filters, 1, **kwargs),
                                    keras.layers.Conv2D(filters, 1, **kwargs), shape, seed=6)


class TestPointwiseConv(TestCase):
    @pytest.mark.parametrize("use_bias", [True, False])
    def test_values_and_gradients_equal_the_layer(self, use_bias):
        shape = (2, 5, 6, 16)
        ours, theirs = twin_pointwise(shape, 8, use_bias=use_bias)
        x = np.random.default_rng(7).normal(size=shape).astype("float32")
        y, dx = values_and_input_gradient(lambda t: pointwise_conv(ours, t), x)
        y_ref, dx_ref = values_and_input_gradient(theirs, x)
        assert tuple(y.shape) == (2, 5, 6, 8)
        self.assertAllClose(y, y_ref, atol=1e-5, rtol=1e-5)
        self.assertAllClose(dx, dx_ref, atol=1e-5, rtol=1e-5)
        if use_bias:  # add_bias=False: the product alone
            self.assertAllClose(pointwise_conv(ours, x, add_bias=False),
                                y_ref - ours.get_weights()[1], atol=1e-5, rtol=1e-5)
        if keras.backend.backend() == "torch":
            # NHWC memory, so the attention layers' reshape to (B, N, F) is a view
            assert y.is_contiguous()

    def test_kernel_and_bias_gradients_equal_the_layer(self):
        """One SGD step moves the kernel and bias as it moves the layer's."""
        shape = (2, 4, 3, 16)
        ours, theirs = twin_pointwise(shape, 8)
        x = np.random.default_rng(8).normal(size=shape).astype("float32")
        target = np.random.default_rng(9).normal(size=(2, 4, 3, 8)).astype("float32")
        for layer in (_PointwiseLayer(ours), theirs):
            model = keras.Sequential([keras.Input(shape[1:]), layer])
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
            model.train_on_batch(x, target)
        for a, b in zip(ours.get_weights(), theirs.get_weights()):
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)
        assert not np.allclose(ours.get_weights()[0], twin_pointwise(shape, 8)[0].get_weights()[0])

    @pytest.mark.parametrize("dtype", ["mixed_float16", "mixed_bfloat16"])
    def test_mixed_precision(self, dtype):
        shape = (1, 4, 5, 16)
        ours, theirs = twin_pointwise(shape, 8, dtype=dtype)
        x = np.random.default_rng(10).normal(size=shape).astype("float32")
        y = pointwise_conv(ours, x)
        assert keras.backend.standardize_dtype(y.dtype) == dtype.split("_")[1]
        self.assertAllClose(keras.ops.cast(y, "float32"), keras.ops.cast(theirs(x), "float32"),
                            atol=5e-2, rtol=5e-2)

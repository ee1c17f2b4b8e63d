"""apply_batch_norm (the TensorFlow and PyTorch fused-kernel adapter) and our BatchNormalization
subclass (the same adapter behind ``call``) equal the Keras layer on every backend;
set_synchronized_batch_norm reaches nested BatchNormalization layers."""

import keras
import numpy as np
import pytest

from keras_segattn.layers import (
    BatchNormalization, ConvBNAct, apply_batch_norm, set_synchronized_batch_norm,
)
from keras_segattn.testing import TestCase, values_and_input_gradient

BACKEND = keras.backend.backend()


def twin_norms(channels, dtype="float32", first_class=keras.layers.BatchNormalization):
    """Two identically initialised BN layers (random affine weights and moving stats): the
    first of ``first_class``, the second Keras' own."""
    rng = np.random.default_rng(0)
    weights = [1 + 0.1 * rng.normal(size=channels), 0.1 * rng.normal(size=channels),
               0.1 * rng.normal(size=channels), 0.5 + rng.uniform(size=channels)]
    norms = []
    for norm_class in (first_class, keras.layers.BatchNormalization):
        norm = norm_class(epsilon=1e-5, momentum=0.9, dtype=dtype)
        norm.build((None, None, None, channels))
        norm.set_weights([w.astype("float32") for w in weights])
        norms.append(norm)
    return norms


def through_adapter(norm, x, training):
    return apply_batch_norm(norm, x, training)


def through_subclass(norm, x, training):
    return norm(x, training=training)


# (how ours is called, the class of ours)
ROUTES = {"apply_batch_norm": (through_adapter, keras.layers.BatchNormalization),
          "BatchNormalization": (through_subclass, BatchNormalization)}


class TestApplyBatchNorm(TestCase):
    @pytest.mark.parametrize("route", sorted(ROUTES))
    @pytest.mark.parametrize("training", [False, True])
    @pytest.mark.parametrize("shape", [(2, 5, 7, 6), (1, 1, 1, 6)])
    def test_equals_the_layer(self, route, training, shape):
        x = (2 + 3 * np.random.default_rng(1).normal(size=shape)).astype("float32")
        call, norm_class = ROUTES[route]
        ours, keras_norm = twin_norms(shape[-1], first_class=norm_class)
        y, dx = values_and_input_gradient(lambda t: call(ours, t, training), x)
        y_ref, dx_ref = values_and_input_gradient(lambda t: keras_norm(t, training=training), x)
        if training and shape[:-1] == (1, 1, 1):
            # One value per channel: x == mean, so the output is beta up to the float32
            # rounding of x - mean (~1e-7), which 1/sqrt(eps) = 316 amplifies to ~5e-5 in
            # both Keras' chain of ops and the fused kernel.
            beta = np.broadcast_to(keras.ops.convert_to_numpy(ours.beta), shape)
            self.assertAllClose(y, beta, atol=1e-4)
            self.assertAllClose(y_ref, beta, atol=1e-4)
        else:
            self.assertAllClose(y, y_ref, atol=2e-5, rtol=1e-5)
        if BACKEND != "jax":  # (JAX: both are the Keras layer, the gradient is traced)
            self.assertAllClose(dx, dx_ref, atol=2e-4, rtol=1e-4)
        if BACKEND != "jax":  # the moving statistics, as Keras updates them
            for a, b in zip(ours.non_trainable_weights, keras_norm.non_trainable_weights):
                self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)
            if training:
                batch_mean = x.reshape(-1, shape[-1]).mean(0)
                expected = 0.9 * np.asarray(twin_norms(shape[-1])[0].moving_mean) + 0.1 * batch_mean
                self.assertAllClose(ours.moving_mean, expected, atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("route", sorted(ROUTES))
    @pytest.mark.parametrize("training", [False, True])
    def test_mixed_precision_returns_compute_dtype(self, route, training):
        x = np.random.default_rng(2).normal(size=(2, 4, 4, 3)).astype("float32")
        call, norm_class = ROUTES[route]
        ours, keras_norm = twin_norms(3, dtype="mixed_bfloat16", first_class=norm_class)
        x16 = keras.ops.cast(x, "bfloat16")
        y = call(ours, x16, training)
        assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
        self.assertAllClose(keras.ops.cast(y, "float32"),
                            keras.ops.cast(keras_norm(x16, training=training), "float32"),
                            atol=2e-2, rtol=2e-2)

    @pytest.mark.skipif(BACKEND == "jax", reason="JAX: both routes are Keras' layer (no kernel)")
    @pytest.mark.parametrize("route", sorted(ROUTES))
    def test_weight_gradients_equal_the_layer(self, route):
        """d loss / d gamma and d beta through the fused kernel == through Keras' chain."""
        x = (1 + 2 * np.random.default_rng(7).normal(size=(2, 5, 4, 6))).astype("float32")
        w = np.random.default_rng(8).normal(size=x.shape).astype("float32")
        call, norm_class = ROUTES[route]
        gradients = []
        for norm, fn in zip(twin_norms(6, first_class=norm_class),
                            (call, lambda n, t, training: n(t, training=training))):
            if BACKEND == "tensorflow":
                import tensorflow as tf

                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(fn(norm, tf.constant(x), True) * w)
                grads = tape.gradient(loss, [norm.gamma.value, norm.beta.value])
            else:
                import torch

                loss = (fn(norm, torch.tensor(x), True) * torch.tensor(w)).sum()
                grads = torch.autograd.grad(loss, [norm.gamma.value, norm.beta.value])
            gradients.append([keras.ops.convert_to_numpy(g) for g in grads])
        for ours, reference in zip(*gradients):
            assert np.abs(reference).max() > 1e-2
            self.assertAllClose(ours, reference, atol=1e-4, rtol=1e-4)

    @pytest.mark.skipif(BACKEND != "tensorflow", reason="the TensorFlow kernel and XLA")
    @pytest.mark.parametrize("jit_compile", [False, True])
    def test_tensorflow_runs_one_fused_kernel_also_compiled(self, jit_compile):
        """In a ``tf.function`` (as ``fit`` runs it) the graph holds FusedBatchNormV3 and not
        Keras' moments; compiled with XLA too, the output and moving statistics equal the
        Keras layer's."""
        import tensorflow as tf

        x = (2 + 3 * np.random.default_rng(9).normal(size=(3, 6, 5, 4))).astype("float32")
        ours, keras_norm = twin_norms(4)
        step = tf.function(lambda t: apply_batch_norm(ours, t, training=True),
                           jit_compile=jit_compile)
        reference = tf.function(lambda t: keras_norm(t, training=True), jit_compile=jit_compile)
        op_types = {op.type for op in step.get_concrete_function(
            tf.TensorSpec((None, None, None, 4))).graph.get_operations()}
        assert "FusedBatchNormV3" in op_types and "SquaredDifference" not in op_types
        self.assertAllClose(step(x), reference(x), atol=2e-5, rtol=1e-5)
        for a, b in zip(ours.non_trainable_weights, keras_norm.non_trainable_weights):
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)
        moved = keras.ops.convert_to_numpy(ours.moving_variance) - twin_norms(4)[0].get_weights()[3]
        assert np.abs(moved).max() > 1e-2

    @pytest.mark.parametrize("kernel_size, dilation_rate", [(1, 1), (3, 2)])
    def test_conv_bn_act_matches_a_plain_keras_stack(self, kernel_size, dilation_rate):
        """ConvBNAct (1x1 conv as a matmul, k x k through our Conv2D, + the BN adapter) ==
        Keras' Conv2D + BN + ReLU."""
        from keras_segattn.layers import Conv2D

        x = np.random.default_rng(3).normal(size=(2, 6, 5, 4)).astype("float32")
        block = ConvBNAct(3, kernel_size, dilation_rate=dilation_rate)
        block.build(x.shape)
        assert type(block.conv) is Conv2D
        conv = keras.layers.Conv2D(3, kernel_size, dilation_rate=dilation_rate, padding="same",
                                   use_bias=False)
        conv.build(x.shape)
        norm = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)
        norm.build((None, None, None, 3))
        conv.set_weights(block.conv.get_weights())
        initial = [np.asarray(w) for w in block.norm.get_weights()]
        norm.set_weights(initial)

        def reference(t):
            return keras.ops.relu(norm(conv(t), training=True))

        y, dx = values_and_input_gradient(lambda t: block(t, training=True), x)
        y_ref, dx_ref = values_and_input_gradient(reference, x)
        self.assertAllClose(y, y_ref, atol=2e-5, rtol=1e-5)
        self.assertAllClose(dx, dx_ref, atol=2e-4, rtol=1e-4)
        # The moving statistics after one eager training call from the same state (on JAX
        # the traced calls above left tracers in the variables: set them again).
        block.norm.set_weights(initial)
        norm.set_weights(initial)
        block(x, training=True)
        reference(x)
        for a, b in zip(block.norm.non_trainable_weights, norm.non_trainable_weights):
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)
        moved = keras.ops.convert_to_numpy(norm.moving_mean) - initial[2]
        assert np.abs(moved).max() > 1e-3  # the call did update them


def nested_bn_model():
    inputs = keras.Input((8, 8, 3))
    x = ConvBNAct(4, 3, name="block")(inputs)
    x = keras.layers.BatchNormalization(name="plain_bn")(x)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


def test_set_synchronized_batch_norm():
    model = nested_bn_model()
    changed = set_synchronized_batch_norm(model)
    norms = [model.get_layer("block").norm, model.get_layer("plain_bn")]
    if BACKEND != "tensorflow":
        # JAX DataParallel already normalises over the global batch; torch trains on one
        # device; Keras refuses synchronized=True there.
        assert changed == [] and not any(n.synchronized for n in norms)
        return
    assert {id(n) for n in changed} == {id(n) for n in norms}
    assert all(n.synchronized for n in norms)
    # Keras serializes the flag of BN layers that are graph nodes; a BN built inside another
    # layer (ConvBNAct) is rebuilt from its parent's arguments: call the function again
    # after loading (see its docstring).
    restored = keras.Model.from_config(model.get_config())
    assert restored.get_layer("plain_bn").synchronized
    assert not restored.get_layer("block").norm.synchronized
    assert len(set_synchronized_batch_norm(restored)) == 1
    # Outside a strategy synchronized BN is ordinary BN.
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype("float32")
    plain = nested_bn_model()
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(model(x, training=True)),
                               np.asarray(plain(x, training=True)), atol=1e-5)
    assert set_synchronized_batch_norm(model) == []  # already synchronized
    assert len(set_synchronized_batch_norm(model, False)) == 2
    assert not any(n.synchronized for n in norms)


def bn_graph(norm_class):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = norm_class(epsilon=1e-5, momentum=0.9, name="bn")(x)
    return keras.Model(inputs, x)


class TestBatchNormalizationSubclass(TestCase):
    def test_keras_round_trip_and_weights_interchange_with_keras_class(self, tmp_path):
        """Saved and loaded as our class; Keras' BN weight files load into it and back (the
        class name, hence the h5 group names, is Keras')."""
        ours, plain = bn_graph(BatchNormalization), bn_graph(keras.layers.BatchNormalization)
        rng = np.random.default_rng(5)
        plain.set_weights([rng.normal(size=w.shape).astype("float32") + (3 if i == 5 else 0)
                           for i, w in enumerate(plain.get_weights())])  # variance > 0
        weights_path = str(tmp_path / "plain.weights.h5")
        plain.save_weights(weights_path)
        ours.load_weights(weights_path)
        x = rng.normal(size=(2, 6, 5, 3)).astype("float32")
        self.assertAllClose(ours(x), plain(x), atol=1e-5)
        assert ours.get_layer("bn").get_config() == plain.get_layer("bn").get_config()

        path = str(tmp_path / "ours.keras")
        ours.save(path)
        restored = keras.saving.load_model(path)
        assert type(restored.get_layer("bn")) is BatchNormalization
        self.assertAllClose(restored(x), ours(x), atol=1e-6)
        restored.save_weights(weights_path)
        plain_again = bn_graph(keras.layers.BatchNormalization)
        plain_again.load_weights(weights_path)
        self.assertAllClose(plain_again(x), plain(x), atol=1e-5)

    def test_masked_call_takes_the_keras_path(self):
        ours, keras_norm = BatchNormalization(), keras.layers.BatchNormalization()
        x = np.random.default_rng(6).normal(size=(2, 4, 3)).astype("float32")
        mask = np.array([[True, True, False, False], [True, False, True, True]])
        self.assertAllClose(ours(x, training=True, mask=mask),
                            keras_norm(x, training=True, mask=mask), atol=1e-5)
        self.assertAllClose(ours.moving_mean, keras_norm.moving_mean, atol=1e-6)

    def test_our_backbone_graphs_use_it_and_our_conv2d(self):
        from keras_segattn.backbones import get_backbone
        from keras_segattn.layers import Conv2D

        # KerasCV layout, mmseg V1c, KerasHub layout (no weights: nothing is downloaded)
        for name in ("resnet_tiny", "resnet_tiny_v1c", "resnet18"):
            backbone = get_backbone(name, output_stride=8, weights=None)
            for keras_class, ours in ((keras.layers.BatchNormalization, BatchNormalization),
                                      (keras.layers.Conv2D, Conv2D)):
                found = [layer for layer in backbone.layers if isinstance(layer, keras_class)]
                assert found and all(type(layer) is ours for layer in found), (name, ours)

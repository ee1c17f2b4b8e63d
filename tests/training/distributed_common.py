"""Shared by the data-parallel step scripts (``distributed_step_script.py``,
``multi_worker_script.py``) and ``test_distribution.py``: the tiny model, its initial weights
and the deterministic global batch, so a distributed step and the single-device reference
step start from exactly the same state."""

import keras
import numpy as np

from keras_segattn.training import WarmupPolyDecay


def build_model(first_layer=None):
    """A 3-conv per-pixel classifier compiled with SGD + momentum and ignore-aware SCCE.

    No BatchNormalization: per-replica batch statistics would differ from the global ones.
    ``first_layer`` (weightless, e.g. a probe) is applied to the inputs first.
    """
    inputs = keras.Input((16, 16, 3))
    x = first_layer(inputs) if first_layer is not None else inputs
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2, activation="relu", name="c2")(x)
    outputs = keras.layers.Conv2D(4, 1, name="cls")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(WarmupPolyDecay(0.5, decay_steps=10), momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    return model


def initial_weights():
    """The weights every run starts from (seeded, independent of the strategy in use)."""
    keras.utils.set_random_seed(1)
    return [np.array(w) for w in build_model().get_weights()]


def global_batch(num_images=4, seed=0):
    """``num_images`` random 16x16 images and labels; the first two label rows of every
    image are ignored (255), so every replica's shard has the same number of labelled
    pixels (Keras averages the loss per replica, then over replicas)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(num_images, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 4, size=(num_images, 16, 16)).astype("int32")
    labels[:, :2] = 255
    return images, labels


def single_device_model(initial):
    """The reference: the same model on one device (no strategy), from ``initial``."""
    model = build_model()
    model.set_weights(initial)
    return model


def single_device_fit(initial, images, labels, batch_size):
    """Weights after ``fit`` of the reference model (one epoch, no shuffling)."""
    model = single_device_model(initial)
    model.fit(images, labels, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return [np.array(w) for w in model.get_weights()]


def max_abs_diff(weights_a, weights_b):
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(weights_a, weights_b))

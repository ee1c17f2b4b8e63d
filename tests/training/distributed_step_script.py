"""Run in a subprocess by test_distribution.py: one SGD step on a 2-replica data-parallel
setup (TF MirroredStrategy on 2 logical CPUs / JAX DataParallel on 2 host devices) vs the
same step on one device; prints a JSON line with the max weight difference."""

import json
import os
import sys

backend = os.environ["KERAS_BACKEND"]
if backend == "tensorflow":
    # Logical devices must exist before TensorFlow initialises its runtime.
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_segattn.training import WarmupPolyDecay, distribution_scope, reset_distribution  # noqa: E402


def build():
    # No BatchNormalization: per-replica batch statistics would differ from the global ones.
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2, activation="relu", name="c2")(x)
    outputs = keras.layers.Conv2D(4, 1, name="cls")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(WarmupPolyDecay(0.5, decay_steps=10), momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    return model


rng = np.random.default_rng(0)
images = rng.normal(size=(4, 16, 16, 3)).astype("float32")
labels = rng.integers(0, 4, size=(4, 16, 16)).astype("int32")
# Same number of ignored pixels in each replica's half: Keras averages the loss per replica.
labels[:, :2] = 255

keras.utils.set_random_seed(1)
single = build()
initial = [w.copy() for w in single.get_weights()]
single.fit(images, labels, batch_size=4, epochs=1, shuffle=False, verbose=0)

kind = sys.argv[1]
with distribution_scope(kind) as info:
    model = build()
    model.set_weights(initial)
model.fit(images, labels, batch_size=4, epochs=1, shuffle=False, verbose=0)
reset_distribution()

diff = max(float(np.max(np.abs(a - b))) for a, b in zip(model.get_weights(), single.get_weights()))
moved = max(float(np.max(np.abs(a - b))) for a, b in zip(initial, single.get_weights()))
print(json.dumps({"kind": info.kind, "replicas": info.num_replicas, "diff": diff, "moved": moved}))

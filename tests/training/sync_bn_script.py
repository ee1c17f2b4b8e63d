"""Run in subprocesses by test_sync_batch_norm.py: one SGD step of a model with
BatchNormalization (a graph-node BN and one nested in ``ConvBNAct``) on the whole global
batch, from fixed initial weights; writes the weights after the step to an ``.npz``.

    python sync_bn_script.py single OUT.npz     # one device (the reference)
    python sync_bn_script.py synced OUT.npz     # TF MirroredStrategy, 2 logical CPUs, SyncBN
    python sync_bn_script.py plain OUT.npz      # the same without SyncBN (the control)
    python sync_bn_script.py data_parallel OUT.npz   # JAX DataParallel, 2 host devices

One step per process: in TF 2.21, a second model trained under a MirroredStrategy in the same
process with synchronized BN failed with a collective-key mismatch ("Shape mismatch in the
collective instance 100"), a cross-model interaction the trainer (one model per process)
never meets. It is TensorFlow's known limitation, reported upstream with the same message for
models trained one after another under one MirroredStrategy (tensorflow/tensorflow#62790,
closed without a fix; TensorFlow's advice: "Restart your program to reset")."""

import os
import sys

backend = os.environ["KERAS_BACKEND"]
if backend == "tensorflow":
    # Logical devices must exist before TensorFlow initialises its runtime.
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import json  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from distributed_common import global_batch  # noqa: E402
from keras_segattn.layers import ConvBNAct, set_synchronized_batch_norm  # noqa: E402
from keras_segattn.training import distribution_scope, reset_distribution  # noqa: E402


def build_model():
    inputs = keras.Input((16, 16, 3))
    x = ConvBNAct(8, 3, name="block")(inputs)  # BN nested in a layer
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c2")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn2")(x)  # BN as a graph node
    x = keras.layers.ReLU()(x)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1, name="cls")(x))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                 ignore_class=255))
    return model




def initial_weights(model):
    """The same initial weights in every process (NumPy-seeded, BN statistics non-trivial)."""
    rng = np.random.default_rng(0)
    weights = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path or "gamma" in variable.path:
            weights.append(rng.uniform(0.5, 1.5, size=shape))
        else:
            weights.append(rng.normal(scale=0.3, size=shape))
    return [w.astype("float32") for w in weights]


mode, out = sys.argv[1], sys.argv[2]
kind = {"single": "none", "synced": "mirrored", "plain": "mirrored",
        "data_parallel": "data_parallel"}[mode]
images, labels = global_batch(4)
images[2:] = 3.0 * images[2:] + 2.0  # the two replicas' shards have other statistics
with distribution_scope(kind) as info:
    model = build_model()
    initial = initial_weights(model)
    model.set_weights(initial)
    changed = set_synchronized_batch_norm(model) if mode in ("synced", "data_parallel") else []
model.fit(images, labels, batch_size=len(images), epochs=1, shuffle=False, verbose=0)
reset_distribution()
np.savez(out, replicas=info.num_replicas, synchronized_layers=len(changed),
         **{f"initial_{i}": w for i, w in enumerate(initial)},
         **{f"after_{i}": np.array(v.value) for i, v in enumerate(model.weights)},
         paths=np.array([v.path for v in model.weights]))

"""Run in a subprocess by test_distribution.py: one SGD step on a 2-replica data-parallel
setup (TF MirroredStrategy on 2 logical CPUs / JAX DataParallel on 2 host devices) vs the
same step on one device; prints a JSON line with the max weight difference."""

import os
import sys

backend = os.environ["KERAS_BACKEND"]
if backend == "tensorflow":
    # Logical devices must exist before TensorFlow initialises its runtime.
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import json  # noqa: E402

from distributed_common import (  # noqa: E402
    build_model, global_batch, initial_weights, max_abs_diff, single_device_fit)
from keras_segattn.training import distribution_scope, reset_distribution  # noqa: E402

images, labels = global_batch(4)
initial = initial_weights()
single = single_device_fit(initial, images, labels, batch_size=4)

kind = sys.argv[1]
with distribution_scope(kind) as info:
    model = build_model()
    model.set_weights(initial)
model.fit(images, labels, batch_size=4, epochs=1, shuffle=False, verbose=0)
reset_distribution()

diff = max_abs_diff(model.get_weights(), single)
moved = max_abs_diff(initial, single)
print(json.dumps({"kind": info.kind, "replicas": info.num_replicas, "diff": diff, "moved": moved}))

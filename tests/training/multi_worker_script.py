"""One worker of a 2-worker ``MultiWorkerMirroredStrategy`` run, started by
test_distribution.py with ``TF_CONFIG`` set (cluster of two localhost workers, CPU only).

Both workers build the model through ``distribution_scope("auto")`` (``TF_CONFIG`` set ->
``multi_worker``), start from the same initial weights and ``fit`` the same deterministic
global batches with Keras' own input pipeline (the strategy shards each global batch
between the workers). A weightless probe layer records, per training step, the sum of the
first pixel of the images this worker saw, so the parent can check the sharding.

Phases (same processes, no extra start-up):

1. two steps, 8 images, global batch 4 (2 per worker);
2. one step on a global batch of 5 (not divisible by the 2 workers).

Writes ``<out>.npz`` (initial + weights after each phase) and then ``<out>.json``
(atomically: the parent polls for it), then waits to be killed: the parent ends both
workers once both have reported, so no worker tears down its collective runtime while the
other may still be finishing the last all-reduce.
"""

import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from distributed_common import build_model, global_batch, initial_weights
from keras_segattn.training import distribution_scope

out = sys.argv[1]
seen = []  # per step: sum over this worker's shard of image[0, 0, 0]


class Probe(keras.layers.Layer):
    """Identity that logs (outside the graph) which images this worker trains on."""

    def call(self, x, training=None):
        if training:
            def record(value):
                seen.append(float(value))
                return np.float32(0)

            tf.numpy_function(record, [tf.reduce_sum(x[:, 0, 0, 0])], tf.float32)
        return x


with distribution_scope("auto") as info:
    model = build_model(first_layer=Probe())
initial = initial_weights()
model.set_weights(initial)

images, labels = global_batch(8)
model.fit(images, labels, batch_size=4, epochs=1, shuffle=False, verbose=0)
after_steps = model.get_weights()
seen_steps = list(seen)

del seen[:]
odd_images, odd_labels = global_batch(5, seed=1)
model.fit(odd_images, odd_labels, batch_size=5, epochs=1, shuffle=False, verbose=0)
after_odd = model.get_weights()

np.savez(out + ".npz", *initial, *after_steps, *after_odd)
report = {"kind": info.kind, "replicas": info.num_replicas, "num_weights": len(initial),
          "seen_steps": seen_steps, "seen_odd": list(seen)}
with open(out + ".json.tmp", "w") as f:
    json.dump(report, f)
os.replace(out + ".json.tmp", out + ".json")
sys.stdout.flush()
sys.stderr.flush()
time.sleep(600)

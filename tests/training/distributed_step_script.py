"""Run in a subprocess by test_distribution.py: one SGD step on a 2-replica data-parallel
setup (TF MirroredStrategy on 2 logical CPUs / JAX DataParallel on 2 host devices) vs the
same step on one device; on TF also whole / slide / multi-scale inference and evaluation
of an odd batch under the strategy. Prints a JSON line with the max differences."""

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
result = {"kind": info.kind, "replicas": info.num_replicas, "diff": diff, "moved": moved}

if kind == "mirrored":
    # Inference / evaluation of a model built under the strategy, on a batch of 3 (not a
    # multiple of the 2 replicas), vs the same weights on one device. (JAX DataParallel:
    # tests/deploy/test_inference.py and tests/test_evaluation.py, in-process.)
    import keras
    import numpy as np

    from keras_segattn import evaluation
    from keras_segattn.inference import predict_logits

    def conv_model():
        keras.utils.set_random_seed(2)
        inputs = keras.Input((None, None, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        return keras.Model(inputs, keras.layers.Conv2D(4, 1)(x))

    plain = conv_model()
    with distribution_scope(kind):
        mirrored = conv_model()
    mirrored.set_weights(plain.get_weights())
    odd_images, odd_labels = global_batch(3, seed=2)
    modes = [dict(mode="whole"), dict(mode="slide", crop_size=(8, 8), stride=(6, 6)),
             dict(mode="multiscale", scales=(0.5, 1.0), flip=True)]
    whole = evaluation._whole_inference(mirrored, odd_images)  # predict_on_batch path
    diffs = [float(np.abs(whole - evaluation._whole_inference(plain, odd_images)).max())]
    same_metrics = []
    for kw in modes:
        if kw["mode"] != "whole":
            diffs.append(float(np.abs(predict_logits(mirrored, odd_images, **kw)
                                      - predict_logits(plain, odd_images, **kw)).max()))
        got, want = (evaluation.evaluate(m, [(odd_images, odd_labels)], 4, **kw)
                     for m in (mirrored, plain))
        same_metrics.append(bool((got["confusion_matrix"] == want["confusion_matrix"]).all()))
    result.update(inference_rows=int(whole.shape[0]), inference_diff=max(diffs),
                  inference_same_metrics=all(same_metrics))
print(json.dumps(result))

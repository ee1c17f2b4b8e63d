"""What the input checks cost per training step (keras_segattn.validation).

Two ways data reaches ``fit``, each timed with and without the checks:

* ``pipeline``: ``data.make_pipeline`` (the trainer's path). With ``num_classes`` every
  example's labels are checked in the tf.data graph (float images would also be checked
  for NaN/Inf); without it and through the plain ``keras.Model.fit``, nothing is.
* ``dataset``: a user's batched float ``tf.data.Dataset`` given to a keras_segattn model's
  ``fit``, which adds a per-batch label + NaN/Inf check in the dataset's graph, against the
  same model's plain ``keras.Model.fit`` (no hook).

The model is deliberately small (FCN with an 8-channel head on ``resnet_tiny``) and the images
large (256x256, batch 8), so that input work weighs as much as it can against the step.
Each variant runs ``--runs`` times (alternating, after one warm-up fit that compiles) for
``--steps`` steps; the median steps/s are printed. Then the input side alone: the CPU time
(``time.process_time``, less sensitive to other processes than wall time) that producing
``--batches`` batches takes, with and without the checks, per batch.

    KERAS_BACKEND=tensorflow python benchmarks/input_checks.py --runs 5 --steps 30
"""

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from keras_segattn import data, models, validation

NUM_CLASSES = 19


def examples(n, size):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, (n, size, size), dtype=np.uint8)
    labels[:, :8] = 255
    return images, labels


def pipeline(images, labels, checked, batch):
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    return data.make_pipeline(ds, training=True, crop_size=images.shape[1], batch_size=batch,
                              seed=0, repeat=True, cache=True, ratio_range=(1.0, 1.0),
                              photometric=False, num_classes=NUM_CLASSES if checked else None)


def user_dataset(images, labels, batch):
    ds = tf.data.Dataset.from_tensor_slices((images.astype("float32"), labels.astype("int32")))
    return ds.repeat().batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def steps_per_second(fit, dataset, steps):
    start = time.perf_counter()
    fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps / (time.perf_counter() - start)


def input_cpu_ms(dataset, batches):
    iterator = iter(dataset)
    next(iterator)
    start = time.process_time()
    for _ in range(batches):
        next(iterator)
    return 1000 * (time.process_time() - start) / batches


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--skip-fit", action="store_true", help="only the input-side timing")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    model = models.get("fcn", num_classes=NUM_CLASSES, backbone="resnet_tiny", channels=8,
                       num_convs=1)
    model.compile(optimizer="adam")
    images, labels = examples(64, args.size)
    plain_fit = lambda *a, **k: keras.Model.fit(model, *a, **k)  # noqa: E731 (no hook)
    variants = {
        "pipeline, checked": (model.fit, pipeline(images, labels, True, args.batch)),
        "pipeline, unchecked": (plain_fit, pipeline(images, labels, False, args.batch)),
        "dataset, fit with checks": (model.fit, user_dataset(images, labels, args.batch)),
        "dataset, keras.Model.fit": (plain_fit, user_dataset(images, labels, args.batch)),
    }
    if not args.skip_fit:
        for fit, dataset in variants.values():  # compile, fill the caches
            fit(dataset, epochs=1, steps_per_epoch=3, verbose=0)
        results = {name: [] for name in variants}
        for _ in range(args.runs):
            for name, (fit, dataset) in variants.items():
                results[name].append(steps_per_second(fit, dataset, args.steps))
        print(f"backend {keras.backend.backend()}, {args.size}x{args.size} batch {args.batch}, "
              f"{args.runs} runs x {args.steps} steps; steps/s median (min-max)")
        for name, values in results.items():
            print(f"  {name:28s} {statistics.median(values):6.2f}  "
                  f"({min(values):.2f}-{max(values):.2f})")
    inputs = {
        "pipeline, checked": pipeline(images, labels, True, args.batch),
        "pipeline, unchecked": pipeline(images, labels, False, args.batch),
        "dataset, checked": validation.checked_dataset(
            user_dataset(images, labels, args.batch), NUM_CLASSES),
        "dataset, unchecked": user_dataset(images, labels, args.batch),
    }
    cpu = {name: [] for name in inputs}
    for _ in range(args.runs):
        for name, dataset in inputs.items():
            cpu[name].append(input_cpu_ms(dataset, args.batches))
    print(f"input side: CPU ms per batch of {args.batch}x{args.size}x{args.size}, median "
          f"(min-max) of {args.runs} x {args.batches} batches")
    for name, values in cpu.items():
        print(f"  {name:28s} {statistics.median(values):6.2f}  "
              f"({min(values):.2f}-{max(values):.2f})")


if __name__ == "__main__":
    main()

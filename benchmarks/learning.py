"""Learning benchmark: FCN vs attention models on the built-in synthetic dataset.

The synthetic shapes all look alike; their class is decided by the colour of a cue marker in
a distant image corner (see ``keras_segattn.data.synthetic``), so a model must bring
long-range context into each shape pixel. This script trains every model with the same
recipe (the one of ``tests/training/test_learning.py``) and prints a table of validation
mIoU, per-class IoU, "fg found" (shape pixels predicted as some shape class) and "fg class"
(shape pixels predicted as their correct class) -- fg class close to fg found means the cue
was read; fg class ~ fg found / 4 means it was not.

Usage::

    KERAS_BACKEND=jax python benchmarks/learning.py                      # fcn, danet, ccnet
    KERAS_BACKEND=jax python benchmarks/learning.py --models fcn danet --steps 1500 --seeds 0 1
    KERAS_BACKEND=jax python benchmarks/learning.py --optimizer sgd --lr 0.01

Reference points: all-background prediction ~0.18 mIoU; shapes found perfectly but classes
guessed ~0.36. On 32x32 / 64x64 images the dilated ``resnet_tiny`` already has a receptive
field covering the whole image, so every head reads the cue; with the cue larger and farther
(``--size 96 --cue-fraction 0.25 --distance-fraction 0.375 --head-width 32 --steps 1600``,
the dataset's ``96px_far`` config) CAANet reads the cue in every run (0.92 mIoU) and FCN in
one run of three (0.68-0.91; benchmarks/RESULTS.md).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", default=["fcn", "danet", "ccnet"])
    p.add_argument("--backbone", default="resnet_tiny")
    p.add_argument("--output-stride", type=int, default=8)
    p.add_argument("--size", type=int, default=32, help="image size (>= 32)")
    p.add_argument("--cue-fraction", type=float, default=1 / 8,
                   help="cue marker side / image size (the dataset's default 1/8)")
    p.add_argument("--distance-fraction", type=float, default=1 / 4,
                   help="minimum shape-to-cue distance / image size (default 1/4)")
    p.add_argument("--num-train", type=int, default=512)
    p.add_argument("--num-val", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"))
    p.add_argument("--lr", type=float, default=None, help="default: 3e-3 adamw, 0.01 sgd")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--head-width", type=int, default=None,
                   help="give every head (and the auxiliary head) this width instead of the "
                        "papers' 512, so that the heads cost about the same")
    return p.parse_args(argv)


def datasets(size, num_train, num_val, batch_size, seed, **options):
    import tensorflow as tf

    from keras_segattn.data.synthetic import synthetic_arrays

    images, labels = synthetic_arrays(num_train, "train", size=size, **options)
    val_images, val_labels = synthetic_arrays(num_val, "validation", size=size, **options)
    images = np.concatenate([images, images[:, :, ::-1]])  # horizontal flips
    labels = np.concatenate([labels, labels[:, :, ::-1]])
    train_ds = (tf.data.Dataset.from_tensor_slices((images.astype("float32"),
                                                    labels.astype("int32")))
                .shuffle(len(images), seed=seed).repeat()
                .batch(batch_size, drop_remainder=True))
    val_ds = tf.data.Dataset.from_tensor_slices(
        (val_images.astype("float32"), val_labels.astype("int32"))).batch(64)
    return train_ds, val_ds, val_images, val_labels


# Constructor options that set a model's head widths (see --head-width).
HEAD_WIDTH_OPTIONS = {
    "fcn": ("channels", "aux_channels"),
    "nonlocalnet": ("channels", "aux_channels"),
    "danet": ("inter_channels", "aux_channels"),
    "ccnet": ("inter_channels", "channels", "aux_channels"),
    "isanet": ("channels", "key_channels", "value_channels", "aux_channels"),
    "lanet": ("inter_channels", "aux_channels"),
    "caanet": ("filters", "channels"),
    "sanet": ("stage_channels", "channels"),
}


def head_options(model_name, width):
    if width is None:
        return {}
    if model_name not in HEAD_WIDTH_OPTIONS:
        raise SystemExit(f"--head-width is not defined for {model_name!r}; "
                         f"models: {sorted(HEAD_WIDTH_OPTIONS)}")
    return {name: width for name in HEAD_WIDTH_OPTIONS[model_name]}


def run_one(model_name, args, seed, workdir):
    import keras

    from keras_segattn.data.synthetic import NUM_CLASSES
    from keras_segattn.training import TrainConfig, train

    train_ds, val_ds, val_images, val_labels = datasets(
        args.size, args.num_train, args.num_val, args.batch_size, seed,
        cue_fraction=args.cue_fraction, distance_fraction=args.distance_fraction)
    config = TrainConfig(
        model=model_name, backbone=args.backbone, output_stride=args.output_stride,
        num_classes=NUM_CLASSES, crop_size=(args.size, args.size), batch_size=args.batch_size,
        steps=args.steps, eval_every=args.steps, optimizer=args.optimizer,
        learning_rate=args.lr, output_dir=os.path.join(workdir, f"{model_name}-{seed}"),
        tensorboard=False, verbose=0, seed=seed,
        model_kwargs=head_options(model_name, args.head_width))
    start = time.time()
    result = train(config, train_dataset=train_ds, val_dataset=val_ds)
    seconds = time.time() - start
    pred = result["model"].predict(val_images.astype("float32"), batch_size=64,
                                   verbose=0).argmax(-1)
    fg = val_labels > 0
    metrics = result["metrics"]
    row = dict(model=model_name, seed=seed, mIoU=float(metrics["mIoU"]),
               IoU=[float(v) for v in metrics["IoU"]], fg_found=float((pred[fg] > 0).mean()),
               fg_class=float((pred[fg] == val_labels[fg]).mean()), seconds=seconds,
               params=int(result["model"].count_params()))
    keras.backend.clear_session()
    return row


def main(argv=None):
    args = parse_args(argv)
    import keras

    print(f"backend {keras.backend.backend()}; {args.backbone} OS{args.output_stride}, "
          f"{args.size}x{args.size}, batch {args.batch_size}, {args.steps} steps, "
          f"{args.optimizer} lr {args.lr or 'default'}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for model_name in args.models:
            for seed in args.seeds:
                row = run_one(model_name, args, seed, workdir)
                rows.append(row)
                print(f"  {model_name} seed {seed}: mIoU {row['mIoU']:.3f} "
                      f"({row['seconds']:.0f} s)", flush=True)
    header = (f"{'model':<10}{'seed':>5}{'params':>9}{'mIoU':>7}  {'IoU per class':<31}"
              f"{'fg found':>9}{'fg class':>9}{'time s':>8}")
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        ious = " ".join(f"{v:.2f}" for v in r["IoU"])
        print(f"{r['model']:<10}{r['seed']:>5}{r['params']:>9}{r['mIoU']:>7.3f}  {ious:<31}"
              f"{r['fg_found']:>9.2f}{r['fg_class']:>9.2f}{r['seconds']:>8.0f}")
    print("\nReference: all-background mIoU ~0.18; shapes found, classes guessed ~0.36.")
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)

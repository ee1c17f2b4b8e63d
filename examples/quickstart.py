"""keras_segattn in five minutes: train DANet on the built-in dataset with model.fit,
evaluate it like mmsegmentation, predict, and export.

    KERAS_BACKEND=jax python examples/quickstart.py --steps 200 --data-dir /tmp/tfds

Works unchanged on TensorFlow, JAX and PyTorch (set KERAS_BACKEND). Use a real dataset by
replacing "synthetic" with "cityscapes", "ade20k", "voc_aug" or "pascal_context" and passing --manual-dir.
"""

import argparse
import os
import tempfile

import keras
import numpy as np

import keras_segattn
from keras_segattn import data, evaluation, models


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="danet")
    parser.add_argument("--backbone", default="resnet_tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data dir")
    parser.add_argument("--output-dir", default=tempfile.mkdtemp(prefix="keras_segattn_"))
    args = parser.parse_args()

    # 1. Data: tf.data pipelines (they feed every Keras backend).
    info = data.dataset_info("synthetic")
    train = data.make_pipeline(
        data.load("synthetic", "train", data_dir=args.data_dir), training=True,
        crop_size=info.crop_size, batch_size=args.batch_size, seed=0, repeat=True,
    )
    val = data.make_pipeline(
        data.load("synthetic", "validation", data_dir=args.data_dir), training=False,
        batch_size=args.batch_size,
    )

    # 2. Model and the standard recipe; auxiliary losses are part of compile().
    model = models.get(args.model, num_classes=info.num_classes, backbone=args.backbone)
    model.compile(
        optimizer=keras.optimizers.AdamW(3e-3, weight_decay=5e-4),  # fast on CPU; the
        # default compile() is the paper recipe: SGD 0.9 + poly LR + weight decay.
    )
    model.summary(line_length=110)
    model.fit(train, steps_per_epoch=args.steps, epochs=1)

    # 3. Evaluation: mIoU / mAcc / aAcc from one confusion matrix + per-class table.
    result = evaluation.evaluate(model, val, info.num_classes, class_names=info.class_names)
    print(result)

    # 4. Prediction: float32 logits at the input resolution, any size.
    images = np.random.default_rng(0).uniform(0, 255, size=(1, 61, 45, 3)).astype("float32")
    print("logits:", model.predict(images, verbose=0).shape)

    # 5. Save, reload, export.
    path = os.path.join(args.output_dir, "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-5)
    if keras.backend.backend() == "tensorflow":
        from keras_segattn.export import export

        export(model, os.path.join(args.output_dir, "saved_model"), format="saved_model")
    print("saved to", args.output_dir, "- keras_segattn", keras_segattn.__version__)


if __name__ == "__main__":
    main()

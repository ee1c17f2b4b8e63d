"""Run by test_resume.py in a subprocess: ``train()`` a tiny FCN for 6 steps (3 intervals of
2) into OUTDIR; with EXIT_AT, the process dies abruptly (``os._exit``) after that step."""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from keras_segattn.training import TrainConfig, train

out_dir, exit_at = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None


class DieAtStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if exit_at is not None and step >= exit_at:
            os._exit(3)  # like SIGKILL: no cleanup, no callbacks


class Record(keras.callbacks.Callback):
    epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        Record.epochs.append(epoch)


rng = np.random.default_rng(0)
images = rng.uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
labels = (images[..., 0] > 127).astype("int32")
train_ds = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(2, drop_remainder=True)
val_ds = tf.data.Dataset.from_tensor_slices((images[:3], labels[:3])).batch(2)
config = TrainConfig(model="fcn", backbone="resnet_tiny", num_classes=2, crop_size=(32, 32),
                     batch_size=2, steps=6, eval_every=2, output_dir=out_dir, tensorboard=False,
                     verbose=0, model_kwargs={"channels": 8, "num_convs": 1})
result = train(config, callbacks=[DieAtStep(), Record()], train_dataset=train_ds,
               val_dataset=val_ds)
print(json.dumps({
    "iterations": int(keras.ops.convert_to_numpy(result["model"].optimizer.iterations)),
    "epochs_run": Record.epochs,
    "mIoU": result["metrics"]["mIoU"],
}))

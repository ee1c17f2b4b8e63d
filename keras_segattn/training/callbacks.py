"""Training callbacks: atomic checkpoints, periodic mmseg-style evaluation, callback assembly.

Training runs as ``fit(epochs=N, steps_per_epoch=interval)`` over an infinite dataset, so one
Keras "epoch" is one checkpoint / evaluation interval of ``interval`` iterations (mmseg's
``IterBasedTrainLoop`` with ``val_interval``). ``keras.callbacks.BackupAndRestore`` saves at
every epoch end, which makes resuming after an interruption exact: it restores weights,
optimizer state (``optimizer.iterations`` included, so the LR schedule continues) and the
epoch counter, and training ends with the same total step count.
"""

import json
import os
import tempfile

import keras

from keras_segattn import evaluation


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` so readers see either the old or the new file, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save_model(model, path):
    """``model.save(path)`` through a temporary file in the same folder + ``os.replace``.

    A crash while saving leaves the previous checkpoint intact (``os.replace`` is atomic on
    POSIX and Windows within one file system)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = ".weights.h5" if path.endswith(".weights.h5") else os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        if suffix == ".weights.h5":
            model.save_weights(tmp, overwrite=True)
        else:
            model.save(tmp, overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save the whole model (``.keras``) every ``every_epochs`` intervals, atomically.

    Files: ``<directory>/ckpt-<step>.keras`` (the newest ``keep`` are kept) and
    ``<directory>/latest.keras``; ``<directory>/checkpoints.json`` lists them with their
    step and logs.

    Args:
        directory: checkpoint folder.
        steps_per_epoch: iterations per Keras epoch (to name files by global step).
        every_epochs: save every this many epochs (the final epoch is always saved).
        keep: how many step checkpoints to keep (``None`` = all).
    """

    def __init__(self, directory, steps_per_epoch, every_epochs=1, keep=3):
        super().__init__()
        self.directory = directory
        self.steps_per_epoch = int(steps_per_epoch)
        self.every_epochs = max(1, int(every_epochs))
        self.keep = keep
        self._epochs = None

    def on_train_begin(self, logs=None):
        self._epochs = self.params.get("epochs") if self.params else None

    def _index_path(self):
        return os.path.join(self.directory, "checkpoints.json")

    def _read_index(self):
        try:
            with open(self._index_path()) as f:
                return json.load(f)
        except (OSError, ValueError):
            return []

    def on_epoch_end(self, epoch, logs=None):
        last = self._epochs is not None and epoch + 1 >= self._epochs
        if (epoch + 1) % self.every_epochs and not last:
            return
        step = (epoch + 1) * self.steps_per_epoch
        path = os.path.join(self.directory, f"ckpt-{step:07d}.keras")
        atomic_save_model(self.model, path)
        atomic_save_model(self.model, os.path.join(self.directory, "latest.keras"))
        index = [e for e in self._read_index() if e.get("step") != step]
        index.append({"step": step, "epoch": epoch + 1, "path": os.path.basename(path),
                      "logs": {k: float(v) for k, v in (logs or {}).items()
                               if isinstance(v, (int, float))}})
        index.sort(key=lambda e: e["step"])
        if self.keep is not None:
            for old in index[: max(0, len(index) - self.keep)]:
                old_path = os.path.join(self.directory, old["path"])
                if os.path.exists(old_path):
                    os.remove(old_path)
            index = index[-self.keep:]
        atomic_write_text(self._index_path(), json.dumps(index, indent=2))


class EvaluationCallback(keras.callbacks.Callback):
    """Run :func:`keras_segattn.evaluation.evaluate` every ``every_epochs`` epochs and add
    ``val_mIoU``, ``val_mAcc``, ``val_aAcc`` (fractions) to the epoch logs, so History,
    TensorBoard and the checkpoint index see them (place it before those callbacks).

    Used instead of ``fit(validation_data=...)`` because it gives mmseg's dataset-level
    metrics and handles partial batches under JAX ``DataParallel`` (by padding).
    """

    def __init__(self, dataset, num_classes, every_epochs=1, class_names=None,
                 max_batches=None, print_table=False, **evaluate_kwargs):
        super().__init__()
        self.dataset = dataset
        self.num_classes = num_classes
        self.every_epochs = max(1, int(every_epochs))
        self.class_names = class_names
        self.max_batches = max_batches
        self.print_table = print_table
        self.evaluate_kwargs = evaluate_kwargs
        self.last_result = None
        self._epochs = None

    def on_train_begin(self, logs=None):
        self._epochs = self.params.get("epochs") if self.params else None

    def on_epoch_end(self, epoch, logs=None):
        last = self._epochs is not None and epoch + 1 >= self._epochs
        if (epoch + 1) % self.every_epochs and not last:
            return
        result = evaluation.evaluate(
            self.model, self.dataset, self.num_classes, class_names=self.class_names,
            max_batches=self.max_batches, **self.evaluate_kwargs)
        self.last_result = result
        if logs is not None:
            for key in ("mIoU", "mAcc", "aAcc"):
                logs[f"val_{key}"] = result[key]
        print(f"\n[eval @ epoch {epoch + 1}] {result.summary()}", flush=True)
        if self.print_table:
            print(result.table(), flush=True)


def make_callbacks(output_dir, steps_per_epoch, checkpoint_every_epochs=1, keep_checkpoints=3,
                   evaluation_callback=None, tensorboard=True, backup=True,
                   terminate_on_nan=True, extra=()):
    """The standard callback list for a run in ``output_dir``.

    Order: [extra..., evaluation, TerminateOnNaN, AtomicCheckpoint, BackupAndRestore,
    TensorBoard, CSVLogger]. Progress bars come from ``fit(verbose=...)``.

    Layout: ``checkpoints/`` (atomic ``.keras`` checkpoints), ``backup/`` (BackupAndRestore
    state; with ``double_checkpoint=True`` a write torn by a crash falls back to the previous
    backup), ``logs/`` (TensorBoard), ``history.csv``.
    """
    callbacks = list(extra)
    if evaluation_callback is not None:
        callbacks.append(evaluation_callback)
    if terminate_on_nan:
        callbacks.append(keras.callbacks.TerminateOnNaN())
    callbacks.append(AtomicCheckpoint(os.path.join(output_dir, "checkpoints"), steps_per_epoch,
                                      every_epochs=checkpoint_every_epochs, keep=keep_checkpoints))
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(
            os.path.join(output_dir, "backup"), save_freq="epoch", double_checkpoint=True,
            delete_checkpoint=False))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "logs"),
                                                     update_freq="epoch"))
    callbacks.append(keras.callbacks.CSVLogger(os.path.join(output_dir, "history.csv"),
                                               append=True))
    return callbacks

"""Training callbacks: interval bookkeeping of ``train()``, atomic checkpoints, periodic
mmseg-style evaluation, a progress bar per interval, and the standard list for ``fit``.

Training runs as ``fit(epochs=N, steps_per_epoch=interval)`` over an endless dataset, so one
Keras "epoch" is one evaluation interval of ``interval`` iterations (mmseg's
``IterBasedTrainLoop`` with ``val_interval``); :class:`RunProgress` ends the last interval
early when the total is not a multiple of it.
"""

import json
import math
import os
import signal
import sys
import threading
import time

import keras
import numpy as np

from keras_segattn import evaluation
from keras_segattn.training.run_dir import atomic_save_model, atomic_write_text  # noqa: F401


def _finite(variable):
    """Whether a floating-point variable holds no NaN or infinity (other dtypes: True)."""
    if "float" not in str(variable.dtype):
        return True
    return bool(np.all(np.isfinite(keras.ops.convert_to_numpy(variable))))


def interval_end(epoch, interval, total_steps):
    """The global step at the end of interval (Keras epoch) ``epoch``."""
    return min((epoch + 1) * interval, total_steps)


class RunProgress(keras.callbacks.Callback):
    """``train()``'s bookkeeping: stop at ``total_steps`` and commit every interval's end.

    At the end of each interval (after :class:`EvaluationCallback`, which adds ``val_*``
    to the logs) it writes, in this order, the resume backup, the ``.keras`` checkpoint
    when one is due, and then ``state.json`` (the commit; see
    :mod:`keras_segattn.training.run_dir`), and after it deletes superseded files and
    rewrites ``history.csv`` and the TensorBoard scalars. A non-finite loss, or a NaN or
    infinity in the model's weights (the interval's last update), stops training before
    anything of that interval is committed.

    Args:
        run: :class:`~keras_segattn.training.run_dir.RunDirectory`.
        state: the committed state this launch starts from (``state.json``'s content).
        interval, total_steps: steps per interval and in the whole run.
        checkpoint_every, keep_checkpoints: ``.keras`` checkpoint period (a multiple of
            ``interval``; the final step is always saved) and how many to keep.
        evaluation_callback: its ``last_result`` is kept in the state for ``metrics.json``.
        scalar_log: optional :class:`~keras_segattn.training.run_dir.ScalarLog`.
        launch_start: ``time.time()`` when this launch started (for the run's seconds).
    """

    def __init__(self, run, state, interval, total_steps, checkpoint_every=None,
                 keep_checkpoints=3, evaluation_callback=None, scalar_log=None,
                 launch_start=None):
        super().__init__()
        self.run = run
        self.state = state
        self.interval = int(interval)
        self.total_steps = int(total_steps)
        self.checkpoint_every = int(checkpoint_every or interval)
        self.keep_checkpoints = keep_checkpoints
        self.evaluation_callback = evaluation_callback
        self.scalar_log = scalar_log
        self._clock = launch_start or time.time()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch * self.interval + batch + 1 >= self.total_steps:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        step = interval_end(epoch, self.interval, self.total_steps)
        committed = self.state["step"]
        row = {"epoch": epoch, "step": step}
        for key, value in sorted((logs or {}).items()):
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                continue
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        loss = row.get("loss")
        if loss is not None and not math.isfinite(loss):
            what = f"the loss became {loss}"
        else:
            # The loss of a step comes before its update: the last update of the interval
            # is seen only in the weights (and the batch-norm statistics).
            broken = next((v.path for v in self.model.weights if not _finite(v)), None)
            what = broken and f"the variable {broken} became NaN or infinite"
        if what:
            raise RuntimeError(
                f"training stopped: {what} in steps {committed + 1}-{step}; "
                f"{self.run.path} stays at step {committed}. Try a lower learning rate, a "
                "warm-up (--warmup-steps) or no mixed precision.")
        try:
            backup = self.run.save_backup(self.model, step)
            if step % self.checkpoint_every == 0 or step == self.total_steps:
                self.run.save_checkpoint(self.model, step, {k: v for k, v in row.items()
                                                            if k not in ("epoch", "step")},
                                         self.keep_checkpoints)
            result = getattr(self.evaluation_callback, "last_result", None)
            now = time.time()
            state = dict(self.state, step=step, backups=[backup] + self.state["backups"][:1],
                         history=self.state["history"] + [row],
                         evaluation=_result_record(result),
                         seconds=self.state.get("seconds", 0.0) + now - self._clock)
            self.run.write_state(state)  # the commit
            self._clock = now
            self.state = state
            self.run.delete_unreferenced(state, self.keep_checkpoints)
            self.run.write_history(state["history"])
            if self.scalar_log is not None:
                self.scalar_log.append(row)
        except OSError as error:
            raise OSError(error.errno, f"cannot save step {step} in {self.run.path} "
                          f"({error.strerror or error}); the run is saved up to step "
                          f"{self.state['step']}: free some space and run the same command "
                          "to resume") from error


class InterruptAtStepEnd(keras.callbacks.Callback):
    """Ctrl-C (SIGINT) during ``fit`` stops training at the end of the current step.

    Python's default handler raises ``KeyboardInterrupt`` at whatever bytecode runs when the
    signal arrives, possibly inside a callback of TensorFlow's or JAX's C++ code, which
    then fails with an unrelated error (``SystemError: ... bad argument to internal
    function``) instead of the interrupt. While ``fit`` runs, this callback's handler only
    records the signal (and says so on stderr); the ``KeyboardInterrupt`` is raised at the
    next step or interval end, in plain Python, after the callbacks before it in the list
    (``RunProgress``: its commit of that step) have run. A second Ctrl-C raises at once.
    Installed only in the main thread (Python delivers signals there), and not where SIGINT
    is ignored (a background job started by a shell: it stays ignored); put it last.
    """

    def __init__(self):
        super().__init__()
        self._previous = None
        self._requested = False

    def _handle(self, signum, frame):
        if self._requested:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._requested = True
        print("\nInterrupted: stopping at the end of this step (Ctrl-C again to stop now).",
              file=sys.stderr, flush=True)

    def on_train_begin(self, logs=None):
        self._requested = False
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _raise_if_requested(self, *args, **kwargs):
        if self._requested:
            self.restore()
            raise KeyboardInterrupt

    on_train_batch_end = on_epoch_end = _raise_if_requested

    def restore(self):
        """Put the previous SIGINT handler back (also called by the trainer after ``fit``)."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_train_end(self, logs=None):
        self.restore()


def _result_record(result):
    if result is None:
        return None
    return {"mIoU": float(result["mIoU"]), "mAcc": float(result["mAcc"]),
            "aAcc": float(result["aAcc"]), "IoU": [float(v) for v in result["IoU"]],
            "Acc": [float(v) for v in result["Acc"]], "class_names": result.get("class_names"),
            "num_images": int(result.get("num_images", 0))}


class IntervalProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, one per interval, headed ``Steps 201-400 of 500``, with the
    last (possibly shorter) interval's own length as its target."""

    def __init__(self, interval, total_steps):
        super().__init__()
        self.interval = int(interval)
        self.total_steps = int(total_steps)

    def set_params(self, params):
        super().set_params(params)
        self.epochs = 1  # our header replaces Keras' "Epoch k/n"

    def on_epoch_begin(self, epoch, logs=None):
        first = epoch * self.interval
        last = interval_end(epoch, self.interval, self.total_steps)
        self.target = last - first
        super().on_epoch_begin(epoch, logs)
        if self.verbose:
            span = f"Step {last}" if last == first + 1 else f"Steps {first + 1}-{last}"
            print(f"{span} of {self.total_steps}", flush=True)


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
        dropped = index[: max(0, len(index) - self.keep)] if self.keep is not None else []
        index = index[len(dropped):]
        atomic_write_text(self._index_path(), json.dumps(index, indent=2))
        for old in dropped:  # after the index no longer names them
            old_path = os.path.join(self.directory, old["path"])
            if os.path.exists(old_path):
                os.remove(old_path)


class EvaluationCallback(keras.callbacks.Callback):
    """Run :func:`keras_segattn.evaluation.evaluate` every ``every_epochs`` epochs and add
    ``val_mIoU``, ``val_mAcc``, ``val_aAcc`` (fractions) to the epoch logs, so History,
    TensorBoard and the checkpoint index see them (place it before those callbacks).

    Used instead of ``fit(validation_data=...)`` because it gives mmseg's dataset-level
    metrics and handles partial batches under JAX ``DataParallel`` (by padding).
    ``steps_per_epoch`` / ``total_steps`` (optional) make the printed line name the global
    step (``[eval @ step 400/500]``) instead of the epoch.
    """

    def __init__(self, dataset, num_classes, every_epochs=1, class_names=None,
                 max_batches=None, print_table=False, steps_per_epoch=None, total_steps=None,
                 **evaluate_kwargs):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
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
        if self.steps_per_epoch and self.total_steps:
            step = interval_end(epoch, self.steps_per_epoch, self.total_steps)
            where = f"step {step}/{self.total_steps}"
        else:
            where = f"epoch {epoch + 1}"
        print(f"\n[eval @ {where}] {result.summary()}", flush=True)
        if self.print_table:
            print(result.table(), flush=True)


def make_callbacks(output_dir, steps_per_epoch, checkpoint_every_epochs=1, keep_checkpoints=3,
                   evaluation_callback=None, tensorboard=True, backup=True,
                   terminate_on_nan=True, extra=()):
    """A standard callback list for your own ``model.fit`` in ``output_dir``.

    Order: [extra..., evaluation, TerminateOnNaN, AtomicCheckpoint, BackupAndRestore,
    TensorBoard, CSVLogger]. Progress bars come from ``fit(verbose=...)``. Keras'
    ``BackupAndRestore`` restores weights, optimizer and epoch, but not the position of your
    data pipeline nor the dropout random states; :func:`keras_segattn.training.train`
    resumes exactly (it does not use this list).

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

"""The files of a training run and how a run survives interruptions.

A run folder (``TrainConfig.output_dir``) holds::

    config.json        the resolved configuration (a rerun must match it)
    state.json         the committed progress: step, history, last evaluation, backups
    backup/            step-<N>.weights.h5 (model + optimizer state) and step-<N>.rng.npz
                       (dropout seed-generator states) of the last two committed steps
    checkpoints/       ckpt-<N>.keras (the newest ``keep``), latest.keras, checkpoints.json
    history.csv        one row per evaluation interval, rewritten from state.json
    logs/              TensorBoard scalars (step on the x axis), rebuilt from state.json
    model.keras, metrics.json    when the run has finished

The commit protocol (:meth:`RunDirectory.commit`): the files of a new step are written first,
each through a temporary file and an atomic rename, then ``state.json`` is replaced
atomically to point at them, and only then are older files deleted. A run killed at any
instant (SIGKILL, power loss) therefore leaves a ``state.json`` that names complete files;
what was written after it is ignored and rewritten on resume, and ``history.csv`` /
``logs/`` are derived from ``state.json`` again at the next start, so they hold exactly the
committed intervals. A write that fails (a full disk) leaves everything committed before it.
"""

import csv
import io
import json
import os
import shutil
import tempfile

import keras
import numpy as np

STATE_VERSION = 1


# --- atomic files -------------------------------------------------------------------------


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    _fsync_dir(directory)


def atomic_write(path, write):
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to
    ``path`` (atomic on POSIX and Windows within one file system). A failure or an interrupt
    removes the temporary file and leaves ``path`` as it was."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    name = os.path.basename(path)
    suffix = ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(directory)


def atomic_save_model(model, path):
    """``model.save(path)`` (``.keras``) or ``model.save_weights(path)`` (``.weights.h5``)
    through :func:`atomic_write`: a crash while saving leaves the previous file intact."""
    if path.endswith(".weights.h5"):
        atomic_write(path, lambda tmp: model.save_weights(tmp, overwrite=True))
    else:
        atomic_write(path, lambda tmp: model.save(tmp, overwrite=True))


# --- random-number state --------------------------------------------------------------------


def rng_variables(model):
    """The model's seed-generator states (dropout masks): variables that are not weights.

    ``model.save_weights`` stores weights and optimizer state but not these, so without
    them a resumed run would draw other dropout masks than the uninterrupted one."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def save_rng(model, path):
    arrays = {f"state_{i}": keras.ops.convert_to_numpy(v)
              for i, v in enumerate(rng_variables(model))}

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a path
            np.savez(f, **arrays)

    atomic_write(path, write)


def load_rng(model, path):
    """Restore :func:`save_rng`'s states, matched by position (seed-generator names are
    numbered per Python session, so they differ between launches)."""
    variables = rng_variables(model)
    with np.load(path) as data:
        saved = [data[f"state_{i}"] for i in range(len(data.files))]
    shapes = [tuple(v.shape) for v in variables]
    if [a.shape for a in saved] != shapes:
        raise ValueError(f"{path}: the saved random-number states ({len(saved)}) do not match "
                         f"the model's ({len(variables)}): is this the same model?")
    for variable, value in zip(variables, saved):
        variable.assign(value)


# --- the run folder ---------------------------------------------------------------------------


class RunDirectory:
    """The files of one run folder (see the module docstring)."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    # -- reading ----------------------------------------------------------------------
    def read_json(self, name):
        path = self.file(name)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} is unreadable ({error}); it was not written by this "
                             "version of keras-segattn, or the disk is damaged. Move it away "
                             "to start the run again.") from None

    def read_state(self):
        state = self.read_json("state.json")
        if state is not None and state.get("version") != STATE_VERSION:
            raise ValueError(f"{self.file('state.json')} has format version "
                             f"{state.get('version')!r}; this keras-segattn reads version "
                             f"{STATE_VERSION}.")
        return state

    # -- start of a launch ----------------------------------------------------------------
    def remove_temporaries(self):
        """Delete ``.tmp-*`` files that a killed write left behind."""
        for folder in (self.path, self.file("backup"), self.file("checkpoints")):
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if name.startswith(".tmp-"):
                        os.remove(os.path.join(folder, name))

    def restore(self, model, state, log=print):
        """Load the newest readable backup of ``state`` into ``model`` (weights, optimizer,
        random-number states); returns its step. A backup that does not load (truncated,
        corrupt) is reported and the previous one is used. Raises ``ValueError`` when none
        loads."""
        problems = []
        for backup in state["backups"]:
            try:
                if model.optimizer is not None and not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                model.load_weights(self.file(backup["weights"]))
                load_rng(model, self.file(backup["rng"]))
            except Exception as error:  # noqa: BLE001 - any unreadable file: try the previous
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
                problems.append(f"step {backup['step']}: {type(error).__name__}: {first_line}")
                log(f"keras-segattn: the backup of step {backup['step']} in {self.path} is "
                    f"unreadable ({problems[-1]}); trying an earlier one.")
                continue
            return backup["step"]
        raise ValueError(f"cannot resume {self.path}: no readable backup ({'; '.join(problems)}); "
                         "move the folder away to start again.")

    def prune_checkpoints(self, step):
        """Forget checkpoints written after the committed ``step`` (a killed interval): they
        are rewritten when the interval runs again."""
        index = self.checkpoint_index()
        keep = [e for e in index if e["step"] <= step]
        if len(keep) == len(index):
            return
        for entry in index:
            if entry["step"] > step:
                path = self.file("checkpoints", entry["path"])
                if os.path.exists(path):
                    os.remove(path)
        latest = self.file("checkpoints", "latest.keras")
        if keep:
            newest = self.file("checkpoints", keep[-1]["path"])
            atomic_write(latest, lambda tmp: shutil.copyfile(newest, tmp))
        elif os.path.exists(latest):
            os.remove(latest)
        atomic_write_text(self.file("checkpoints", "checkpoints.json"), json.dumps(keep, indent=2))

    # -- an interval's end -----------------------------------------------------------------
    def checkpoint_index(self):
        try:
            with open(self.file("checkpoints", "checkpoints.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return []

    def save_backup(self, model, step):
        files = {"step": step, "weights": os.path.join("backup", f"step-{step:07d}.weights.h5"),
                 "rng": os.path.join("backup", f"step-{step:07d}.rng.npz")}
        atomic_save_model(model, self.file(files["weights"]))
        save_rng(model, self.file(files["rng"]))
        return files

    def save_checkpoint(self, model, step, logs, keep):
        """``checkpoints/ckpt-<step>.keras`` and ``latest.keras``, and the index entry.
        Returns the index as it will be once older checkpoints are deleted."""
        name = f"ckpt-{step:07d}.keras"
        atomic_save_model(model, self.file("checkpoints", name))
        source = self.file("checkpoints", name)
        atomic_write(self.file("checkpoints", "latest.keras"),
                     lambda tmp: shutil.copyfile(source, tmp))
        index = [e for e in self.checkpoint_index() if e["step"] != step]
        index.append({"step": step, "path": name, "logs": logs})
        index.sort(key=lambda e: e["step"])
        atomic_write_text(self.file("checkpoints", "checkpoints.json"), json.dumps(index, indent=2))
        return index

    def write_state(self, state):
        atomic_write_text(self.file("state.json"), json.dumps(state, indent=1, allow_nan=True))

    def delete_unreferenced(self, state, keep_checkpoints):
        """After a commit: remove backups that ``state`` no longer names, and checkpoints
        beyond the newest ``keep_checkpoints``."""
        named = {os.path.basename(b[k]) for b in state["backups"] for k in ("weights", "rng")}
        backup = self.file("backup")
        if os.path.isdir(backup):
            for name in os.listdir(backup):
                if name.startswith("step-") and name not in named:
                    os.remove(os.path.join(backup, name))
        if keep_checkpoints is None:
            return
        index = self.checkpoint_index()
        if len(index) <= keep_checkpoints:
            return
        for old in index[: len(index) - keep_checkpoints]:
            path = self.file("checkpoints", old["path"])
            if os.path.exists(path):
                os.remove(path)
        atomic_write_text(self.file("checkpoints", "checkpoints.json"),
                          json.dumps(index[len(index) - keep_checkpoints:], indent=2))

    # -- derived files ----------------------------------------------------------------------
    def write_history(self, rows):
        """``history.csv``: one row per committed interval (``step`` first)."""
        keys = sorted({k for row in rows for k in row} - {"step", "epoch"})
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["epoch", "step", *keys])
        for row in rows:
            writer.writerow([row["epoch"], row["step"], *(_csv_value(row.get(k)) for k in keys)])
        atomic_write_text(self.file("history.csv"), out.getvalue())

    def remove(self, name):
        path = self.file(name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def _csv_value(value):
    return "" if value is None else repr(value) if isinstance(value, float) else value


class ScalarLog:
    """TensorBoard scalars of the committed intervals: ``logs/train`` (``epoch_<metric>``,
    ``epoch_learning_rate``) and ``logs/validation`` (``epoch_mIoU``, ...), with the global
    step on the x axis. Rebuilt from the history at every start, then appended to."""

    def __init__(self, directory, rows):
        import tensorflow as tf

        self._tf = tf
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        self._writers = {split: tf.summary.create_file_writer(os.path.join(directory, split))
                         for split in ("train", "validation")}
        for row in rows:
            self.append(row)

    def append(self, row):
        for key, value in row.items():
            if key in ("step", "epoch") or not isinstance(value, (int, float)):
                continue
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writers[split].as_default():
                self._tf.summary.scalar(f"epoch_{name}", value, step=row["step"])
        for writer in self._writers.values():
            writer.flush()

    def close(self):
        for writer in self._writers.values():
            writer.close()

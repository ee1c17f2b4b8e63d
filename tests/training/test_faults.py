"""A training run survives SIGKILL (also in the middle of a checkpoint write), SIGINT at a
random moment and a full disk, and its resumed result equals the uninterrupted run.

The run: ``keras-segattn train`` of FCN on ``resnet_tiny`` on the built-in ``32px_tiny``
dataset, 5 steps in intervals of 2, 2, 1 (``fault_script.py``). One test per backend runs,
on one run folder:

1. the uninterrupted reference run (in this process);
2. a launch killed (SIGKILL) while ``checkpoints/ckpt-0000004.keras`` is being written;
3. a launch whose every write of step 4 fails with ``OSError(ENOSPC)`` (in this process);
4. a launch interrupted by a real SIGINT at a random moment after it resumed;
5. the state a SIGKILL between the commit of a step and the rewrite of ``history.csv`` and the
   TensorBoard logs leaves (made by hand: the last row removed from both);
6. a final launch, whose ``history.csv``, ``metrics.json``, TensorBoard scalars and checkpoints
   must equal the reference run's (every number within 1e-6; on TensorFlow, JAX and PyTorch
   CPU they are bitwise equal).

After each fault, what was saved before it is checked to be intact.
"""

import csv
import errno
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time

import keras
import numpy as np

from keras_segattn import validation
from keras_segattn.training import run_dir

SCRIPT = os.path.join(os.path.dirname(__file__), "fault_script.py")
sys.path.insert(0, os.path.dirname(__file__))
import fault_script  # noqa: E402


def launch(fault, output_dir, data_dir, interrupt_after=None):
    """Run ``fault_script.py``; with ``interrupt_after`` (seconds), send SIGINT that long after
    the launch printed "Resuming". Returns ``(returncode, stdout, stderr)``."""
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), PYTHONUNBUFFERED="1")
    # SIGINT at its default in the child, as in a terminal (a test runner started as a
    # background job passes it on ignored, and an ignored SIGINT stays ignored in training).
    process = subprocess.Popen([sys.executable, SCRIPT, fault, output_dir, data_dir], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines, errors = queue.Queue(), []
    threading.Thread(target=lambda: [*map(lines.put, process.stdout), lines.put(None)],
                     daemon=True).start()
    threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True).start()
    out = []
    while True:
        line = lines.get(timeout=600)
        if line is None:
            break
        out.append(line)
        if interrupt_after is not None and line.startswith("Resuming"):
            time.sleep(interrupt_after)
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            interrupt_after = None
    code = process.wait(timeout=600)
    for _ in range(100):
        if errors:
            break
        time.sleep(0.05)
    return code, "".join(out), errors[0] if errors else ""


def read_history(path):
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def read_scalars(logs):
    """``{(split, tag, step): value}`` of the TensorBoard event files, refusing duplicates."""
    import tensorflow as tf

    scalars = {}
    for split in ("train", "validation"):
        folder = os.path.join(logs, split)
        for name in sorted(os.listdir(folder)):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
                for value in event.summary.value:
                    key = (split, value.tag, event.step)
                    assert key not in scalars, f"duplicate TensorBoard point {key}"
                    scalars[key] = float(tf.make_ndarray(value.tensor))
    return scalars


def history_as_scalars(rows):
    scalars = {}
    for row in rows:
        for key, value in row.items():
            if key in ("epoch", "step"):
                continue
            split, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            scalars[(split, f"epoch_{tag}", int(row["step"]))] = value
    return scalars


def committed_step(folder):
    with open(os.path.join(folder, "state.json")) as f:
        return json.load(f)["step"]


def assert_intact(folder, step):
    """What a committed ``step`` promises: its backups and checkpoints load, history.csv has
    its rows, no temporary file is left where a reader would see it."""
    state = run_dir.RunDirectory(folder).read_state()
    assert state["step"] == step
    for backup in state["backups"]:
        for key in ("weights", "rng"):
            assert os.path.getsize(os.path.join(folder, backup[key])) > 0
    with open(os.path.join(folder, "checkpoints", "checkpoints.json")) as f:
        index = json.load(f)
    assert [e["step"] for e in index] == [s for s in (2, 4, 5) if s <= step]
    for entry in index:
        validation.check_keras_file(os.path.join(folder, "checkpoints", entry["path"]))
    assert [int(r["step"]) for r in read_history(os.path.join(folder, "history.csv"))] == [
        s for s in (2, 4, 5) if s <= step]


def test_kill_interrupt_full_disk_then_resume_equals_uninterrupted_run(tmp_path, monkeypatch,
                                                                    capsys):
    from keras_segattn.cli import main

    data_dir, reference, run = (str(tmp_path / name) for name in ("tfds", "reference", "run"))
    args = fault_script.ARGS + ["--data-dir", data_dir]
    assert main(args + ["--output-dir", reference]) == 0

    # 2. SIGKILL in the middle of writing checkpoints/ckpt-0000004.keras.
    code, out, err = launch("kill-in-checkpoint-write:4", run, data_dir)
    assert code == -signal.SIGKILL, err[-2000:]
    assert_intact(run, 2)
    assert any(n.startswith(".tmp-") for n in os.listdir(os.path.join(run, "checkpoints")))

    # 3. A full disk while step 4 is saved: one line, exit 1, step 2 intact, no temp files.
    atomic_write = run_dir.atomic_write

    def full_disk(path, write):
        if "0000004" not in os.path.basename(path):
            return atomic_write(path, write)

        def fail(tmp):
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return atomic_write(path, fail)

    monkeypatch.setattr(run_dir, "atomic_write", full_disk)
    capsys.readouterr()
    assert main(args + ["--output-dir", run]) == 1
    monkeypatch.undo()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"keras-segattn train: error: cannot save step 4 in {run} (No space left on device); "
        "the run is saved up to step 2: free some space and run the same command to resume")
    assert_intact(run, 2)
    for folder in (run, os.path.join(run, "checkpoints"), os.path.join(run, "backup")):
        assert not any(n.startswith(".tmp-") for n in os.listdir(folder))

    # 4. A real SIGINT at a random moment after the launch resumed (the seed is printed by
    # pytest on failure through the assertion messages).
    seed = random.SystemRandom().randrange(1000)
    delay = random.Random(seed).uniform(0.0, 8.0)
    code, out, err = launch("none", run, data_dir, interrupt_after=delay)
    assert f"Resuming {run} from step 2 of 5." in out
    if code == -signal.SIGINT:  # it arrived after main() returned, while Python shut down
        assert f"Saved {run}" in out, f"seed {seed}: {out[-2000:]} {err[-2000:]}"
        code = 0
    assert code in (0, 130), f"seed {seed}: {out[-2000:]} {err[-2000:]}"
    if code == 130:
        step = committed_step(run)
        assert "Traceback" not in err, f"seed {seed}: {err[-2000:]}"
        assert err.strip().splitlines()[-1] == (
            f"keras-segattn train: interrupted. {run} is saved at step {step} of 5; run the "
            f"same command (or keras-segattn train --resume {run}) to continue from there."), \
            f"seed {seed}"

    # 5. What a SIGKILL right after a commit leaves: history.csv and the TensorBoard logs one
    # interval behind state.json.
    history = os.path.join(run, "history.csv")
    if committed_step(run) == 4:
        with open(history) as f:
            rows = f.readlines()
        with open(history, "w") as f:
            f.writelines(rows[:-1])
        for split in ("train", "validation"):
            for name in os.listdir(os.path.join(run, "logs", split)):
                os.remove(os.path.join(run, "logs", split, name))

    # 6. The final launch ends where the uninterrupted run ended.
    code, out, err = launch("none", run, data_dir)
    assert code == 0, err[-2000:]
    assert err.strip() == "", err  # no start-up logs, deprecation warnings or tfds banners
    expected, got = read_history(os.path.join(reference, "history.csv")), read_history(history)
    assert [r["step"] for r in got] == [2, 4, 5]
    for want, have in zip(expected, got):
        assert want.keys() == have.keys()
        for key in want:
            assert abs(want[key] - have[key]) <= 1e-6, (key, want, have)
    with open(os.path.join(reference, "metrics.json")) as f:
        want = json.load(f)
    with open(os.path.join(run, "metrics.json")) as f:
        have = json.load(f)
    np.testing.assert_allclose(have["IoU"], want["IoU"], atol=1e-6)
    np.testing.assert_allclose([have[k] for k in ("mIoU", "mAcc", "aAcc")],
                               [want[k] for k in ("mIoU", "mAcc", "aAcc")], atol=1e-6)
    scalars = read_scalars(os.path.join(run, "logs"))
    assert scalars.keys() == history_as_scalars(got).keys()
    for key, value in history_as_scalars(got).items():
        assert abs(scalars[key] - value) <= 1e-6, key
    assert not os.path.exists(os.path.join(run, "backup"))  # a finished run cleans up
    assert_intact(run, 5)
    reference_model = keras.saving.load_model(os.path.join(reference, "model.keras"))
    resumed_model = keras.saving.load_model(os.path.join(run, "model.keras"))
    for a, b in zip(reference_model.weights, resumed_model.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a),
                                   atol=1e-6, err_msg=a.path)

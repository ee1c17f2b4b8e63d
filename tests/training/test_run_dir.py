"""The run folder's commit protocol, on a small Dense model (fast): corrupt and truncated
backups, checkpoints written after the committed step, temporary files, a NaN loss."""

import json
import math
import os

import keras
import numpy as np
import pytest

from keras_segattn import validation
from keras_segattn.training import callbacks, run_dir


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    x = keras.layers.Dropout(0.5)(keras.layers.Dense(8)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.compile(keras.optimizers.AdamW(1e-2), "mse")
    return model


def train_steps(model, steps, seed=1):
    rng = np.random.default_rng(seed)
    model.fit(rng.normal(size=(steps * 4, 4)), rng.normal(size=(steps * 4, 2)), batch_size=4,
              epochs=1, verbose=0, shuffle=False)


def snapshot(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.variables] + [
        keras.ops.convert_to_numpy(v).copy() for v in model.optimizer.variables]


def commit(run, model, state, step):
    """What RunProgress does at an interval's end, for the backup part."""
    backup = run.save_backup(model, step)
    state = dict(state, step=step, backups=[backup] + state["backups"][:1],
                 history=state["history"] + [{"epoch": len(state["history"]), "step": step,
                                              "loss": float(step)}])
    run.write_state(state)
    run.delete_unreferenced(state, keep_checkpoints=3)
    return state


@pytest.fixture
def two_commits(tmp_path):
    """A run folder with committed steps 2 and 4; returns (run, state, values at 2, at 4)."""
    run = run_dir.RunDirectory(str(tmp_path / "run"))
    model = small_model()
    state = {"version": 1, "step": 0, "total_steps": 6, "finished": False, "backups": [],
             "history": [], "evaluation": None, "seconds": 0.0}
    train_steps(model, 2)
    state = commit(run, model, state, 2)
    at_2 = snapshot(model)
    train_steps(model, 2, seed=2)
    state = commit(run, model, state, 4)
    return run, state, at_2, snapshot(model)


def restored(run, state, messages):
    model = small_model(seed=5)  # other initial weights: everything must come from the backup
    step = run.restore(model, state, log=messages.append)
    return step, snapshot(model)


def test_restore_brings_back_weights_optimizer_and_dropout_state(two_commits):
    run, state, _, at_4 = two_commits
    messages = []
    step, values = restored(run, state, messages)
    assert step == 4 and messages == []
    for want, have in zip(at_4, values):
        np.testing.assert_array_equal(have, want)
    # Only the two newest backups are kept (4 and 2).
    assert sorted(os.listdir(run.file("backup"))) == [
        "step-0000002.rng.npz", "step-0000002.weights.h5",
        "step-0000004.rng.npz", "step-0000004.weights.h5"]


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "missing_rng"])
def test_an_unreadable_backup_falls_back_to_the_previous_one(two_commits, damage):
    run, state, at_2, _ = two_commits
    weights = run.file("backup", "step-0000004.weights.h5")
    if damage == "truncated":
        data = open(weights, "rb").read()
        open(weights, "wb").write(data[: len(data) // 2])
    elif damage == "empty":
        open(weights, "wb").close()
    elif damage == "garbage":
        open(weights, "wb").write(os.urandom(4096))
    else:
        os.remove(run.file("backup", "step-0000004.rng.npz"))
    messages = []
    step, values = restored(run, state, messages)
    assert step == 2
    for want, have in zip(at_2, values):
        np.testing.assert_array_equal(have, want)
    assert len(messages) == 1 and messages[0].startswith(
        f"keras-segattn: the backup of step 4 in {run.path} is unreadable (step 4: ")
    assert messages[0].endswith("; trying an earlier one.") and "\n" not in messages[0]


def test_no_readable_backup_is_one_line(two_commits):
    run, state, _, _ = two_commits
    for name in os.listdir(run.file("backup")):
        if name.endswith(".h5"):
            open(run.file("backup", name), "wb").close()
    with pytest.raises(ValueError) as info:
        restored(run, state, [])
    message = str(info.value)
    assert message.startswith(f"cannot resume {run.path}: no readable backup (step 4: ")
    assert message.endswith("move the folder away to start again.") and "\n" not in message


def test_checkpoints_after_the_committed_step_are_forgotten(tmp_path):
    run = run_dir.RunDirectory(str(tmp_path / "run"))
    model = small_model()
    for step in (2, 4, 6):
        run.save_checkpoint(model, step, {"loss": 1.0}, keep=3)
    run.prune_checkpoints(4)  # a launch killed after writing ckpt 6, before its commit
    index = json.load(open(run.file("checkpoints", "checkpoints.json")))
    assert [e["step"] for e in index] == [2, 4]
    assert not os.path.exists(run.file("checkpoints", "ckpt-0000006.keras"))
    with open(run.file("checkpoints", "latest.keras"), "rb") as a, \
            open(run.file("checkpoints", "ckpt-0000004.keras"), "rb") as b:
        assert a.read() == b.read()
    run.prune_checkpoints(0)
    assert not os.path.exists(run.file("checkpoints", "latest.keras"))


def test_temporary_files_of_a_killed_write_are_removed(tmp_path):
    run = run_dir.RunDirectory(str(tmp_path / "run"))
    os.makedirs(run.file("checkpoints"))
    open(run.file("checkpoints", ".tmp-abc.keras"), "wb").write(b"half")
    open(run.file("checkpoints", "ckpt-0000002.keras"), "wb").write(b"kept")
    run.remove_temporaries()
    assert os.listdir(run.file("checkpoints")) == ["ckpt-0000002.keras"]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = str(tmp_path / "state.json")
    run_dir.atomic_write_text(path, "old")

    def fail(tmp):
        open(tmp, "w").write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        run_dir.atomic_write(path, fail)
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["state.json"]


def progress_at_step_2(tmp_path):
    """A run of 6 steps in intervals of 2, committed at step 2: its (run, model, progress)."""
    run = run_dir.RunDirectory(str(tmp_path / "run"))
    model = small_model()
    state = {"version": 1, "step": 2, "total_steps": 6, "finished": False, "backups": [],
             "history": [], "evaluation": None, "seconds": 0.0}
    progress = callbacks.RunProgress(run, state, interval=2, total_steps=6)
    progress.set_model(model)
    return run, model, progress


def test_a_nan_loss_stops_before_anything_is_committed(tmp_path):
    run, _, progress = progress_at_step_2(tmp_path)
    with pytest.raises(RuntimeError) as info:
        progress.on_epoch_end(1, {"loss": math.nan})
    assert str(info.value) == (
        f"training stopped: the loss became nan in steps 3-4; {run.path} stays at step 2. Try "
        "a lower learning rate, a warm-up (--warmup-steps) or no mixed precision.")
    assert not os.path.exists(run.path)


def test_a_nan_weight_stops_before_anything_is_committed(tmp_path):
    """The interval's last update shows only in the weights (its loss came before it)."""
    run, model, progress = progress_at_step_2(tmp_path)
    kernel = model.layers[-1].kernel
    kernel.assign(np.where(np.arange(16).reshape(8, 2) == 5, np.inf, 0.0).astype("float32"))
    with pytest.raises(RuntimeError) as info:
        progress.on_epoch_end(1, {"loss": 0.5})
    assert str(info.value) == (
        f"training stopped: the variable {kernel.path} became NaN or infinite in steps 3-4; "
        f"{run.path} stays at step 2. Try a lower learning rate, a warm-up (--warmup-steps) or "
        "no mixed precision.")
    assert not os.path.exists(run.path)
    kernel.assign(np.zeros((8, 2), "float32"))  # finite again: the interval is committed
    progress.on_epoch_end(1, {"loss": 0.5})
    assert run.read_state()["step"] == 4


def test_history_and_tensorboard_are_rebuilt_from_the_state(tmp_path):
    import tensorflow as tf

    run = run_dir.RunDirectory(str(tmp_path / "run"))
    rows = [{"epoch": 0, "step": 2, "loss": 1.5, "val_mIoU": 0.25},
            {"epoch": 1, "step": 3, "loss": 1.0, "val_mIoU": 0.5}]
    run.write_history(rows)
    assert open(run.file("history.csv")).read() == (
        "epoch,step,loss,val_mIoU\n0,2,1.5,0.25\n1,3,1.0,0.5\n")
    log = run_dir.ScalarLog(run.file("logs"), rows[:1])
    log.close()
    log = run_dir.ScalarLog(run.file("logs"), rows)  # the next launch: rebuilt, not appended
    log.close()
    points = []
    for split in ("train", "validation"):
        for name in os.listdir(run.file("logs", split)):
            for event in tf.compat.v1.train.summary_iterator(run.file("logs", split, name)):
                points += [(split, v.tag, event.step, float(tf.make_ndarray(v.tensor)))
                           for v in event.summary.value]
    assert sorted(points) == [("train", "epoch_loss", 2, 1.5), ("train", "epoch_loss", 3, 1.0),
                              ("validation", "epoch_mIoU", 2, 0.25),
                              ("validation", "epoch_mIoU", 3, 0.5)]


def test_check_keras_file_on_a_good_file(tmp_path):
    path = str(tmp_path / "m.keras")
    small_model().save(path)
    assert validation.check_keras_file(path) == path
    with pytest.raises(ValueError) as info:
        validation.check_keras_file(str(tmp_path))
    assert str(info.value) == f"model file {str(tmp_path)!r} is a folder, not a .keras file."

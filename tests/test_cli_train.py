import csv
import json
import os
import subprocess
import sys

import pytest

from keras_segattn.cli import main

TINY = ["--model", "fcn", "--backbone", "resnet_tiny", "--dataset", "synthetic",
        "--dataset-config", "32px_tiny", "--crop-size", "32", "--batch-size", "4", "--lr", "0.02",
        "--distribution", "none"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """3 steps in intervals of 2 and 1 (--steps need not be a multiple of --eval-every)."""
    root = tmp_path_factory.mktemp("cli")
    data_dir, out_dir = str(root / "tfds"), str(root / "run")
    code = main(["train", *TINY, "--data-dir", data_dir, "--steps", "3", "--eval-every", "2",
                 "--output-dir", out_dir])
    assert code == 0
    return data_dir, out_dir


def test_train_end_to_end(tiny_run):
    _, out_dir = tiny_run
    for name in ("model.keras", "config.json", "state.json", "metrics.json", "history.csv",
                 "checkpoints/latest.keras", "checkpoints/ckpt-0000002.keras",
                 "checkpoints/ckpt-0000003.keras"):
        assert os.path.exists(os.path.join(out_dir, name)), name
    assert not os.path.exists(os.path.join(out_dir, "backup"))  # a finished run cleans up
    config = json.load(open(os.path.join(out_dir, "config.json")))
    assert config["model"] == "fcn" and config["crop_size"] == [32, 32]
    assert config["_run"]["num_classes"] == 5
    metrics = json.load(open(os.path.join(out_dir, "metrics.json")))
    assert 0.0 <= metrics["mIoU"] <= 1.0 and metrics["steps"] == 3
    with open(os.path.join(out_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 3]  # the last interval is 1 step
    assert float(rows[-1]["val_mIoU"]) == pytest.approx(metrics["mIoU"])
    state = json.load(open(os.path.join(out_dir, "state.json")))
    assert state["finished"] and state["step"] == 3 and state["backups"] == []


def test_rerunning_a_finished_run_reports_its_result(tiny_run, capsys):
    data_dir, out_dir = tiny_run
    code = main(["train", *TINY, "--data-dir", data_dir, "--steps", "3", "--eval-every", "2",
                 "--output-dir", out_dir])
    assert code == 0
    out = capsys.readouterr().out
    assert f"{out_dir} finished all 3 steps earlier: reporting its result" in out
    metrics = json.load(open(os.path.join(out_dir, "metrics.json")))
    assert f"Final mIoU: {100 * metrics['mIoU']:.2f}" in out
    assert "Steps" not in out  # nothing was trained


def test_rerun_finishes_a_clean_up_that_ctrl_c_cut_short(tiny_run, capsys):
    # Ctrl-C between writing the finished state and removing backup/ (seen in the random
    # SIGINT fault test) leaves backup/ behind; the next launch removes it.
    data_dir, out_dir = tiny_run
    os.makedirs(os.path.join(out_dir, "backup"))
    with open(os.path.join(out_dir, "backup", "step-0000002.weights.h5"), "wb") as f:
        f.write(b"left over")
    code = main(["train", *TINY, "--data-dir", data_dir, "--steps", "3", "--eval-every", "2",
                 "--output-dir", out_dir])
    assert code == 0
    assert "finished all 3 steps earlier" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(out_dir, "backup"))


def test_a_run_folder_refuses_other_settings(tiny_run, capsys):
    data_dir, out_dir = tiny_run
    code = main(["train", *TINY, "--data-dir", data_dir, "--steps", "4", "--eval-every", "2",
                 "--output-dir", out_dir])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"keras-segattn train: error: {out_dir} holds a run with other settings (steps: 3 "
        f"there, 4 here); continue it with its own settings (keras-segattn train --resume "
        f"{out_dir}) or choose another output_dir.")


def test_evaluate_end_to_end(tiny_run, capsys):
    data_dir, out_dir = tiny_run
    code = main(["evaluate", os.path.join(out_dir, "model.keras"), "--dataset", "synthetic",
                 "--dataset-config", "32px_tiny", "--data-dir", data_dir, "--batch-size", "3"])
    assert code == 0
    out = capsys.readouterr().out
    assert "mIoU:" in out and "mAcc:" in out and "aAcc:" in out
    assert "background" in out and "8 images" in out


def test_export_int8_calibrates_on_the_runs_dataset_config(tiny_run):
    """The run trained on synthetic 32px_tiny: calibration images come from that config
    (32x32), not from the dataset's default (64px)."""
    import argparse

    import numpy as np

    from keras_segattn.cli.export import calibration_dataset

    data_dir, out_dir = tiny_run
    args = argparse.Namespace(model=os.path.join(out_dir, "model.keras"), calibration_data=None,
                              dataset_config=None, data_dir=None, manual_dir=None)
    images = [np.asarray(e["image"]) for e in calibration_dataset(args).take(3)]
    assert (args.calibration_data, args.dataset_config, args.data_dir) == (
        "synthetic", "32px_tiny", data_dir)
    assert {image.shape for image in images} == {(32, 32, 3)}


def test_synthetic_defaults_resolve_to_the_demo_recipe():
    from keras_segattn.training import TrainConfig

    config = TrainConfig(output_dir="unused").validate()
    assert config.dataset_config == "32px" and config.crop_size == (32, 32)
    assert config.augment == "flip" and config.optimizer == "adamw"
    config = TrainConfig(dataset="cityscapes", output_dir="unused").validate()
    assert config.augment == "full" and config.optimizer == "sgd"
    assert config.dataset_config is None and config.crop_size is None


def test_cli_choices_are_the_libraries():
    """`--help` must not import Keras, so the CLI writes the choices out: they must stay the
    library's."""
    from keras_segattn import evaluation
    from keras_segattn.cli import train as cli_train
    from keras_segattn.training import distribution, trainer

    assert cli_train.DISTRIBUTIONS == distribution.DISTRIBUTIONS
    assert cli_train.AUGMENTATIONS == trainer.AUGMENTATIONS
    assert cli_train.OPTIMIZERS == trainer.OPTIMIZERS
    assert (None, *cli_train.MIXED_PRECISION) == trainer.MIXED_PRECISION
    assert cli_train.EVAL_MODES == evaluation.INFERENCE_MODES


def test_augment_flip_keeps_pixels(tiny_run):
    """augment="flip" only mirrors: every training image is a dataset image or its mirror."""
    import numpy as np

    from keras_segattn.data.synthetic import synthetic_arrays
    from keras_segattn.training import TrainConfig
    from keras_segattn.training.trainer import build_datasets

    data_dir, _ = tiny_run
    config = TrainConfig(dataset_config="32px_tiny", data_dir=data_dir, augment="flip",
                         output_dir="unused").validate()
    train_ds, _ = build_datasets(config, 4)
    images, labels = (np.asarray(t) for t in next(iter(train_ds)))
    ref_images, ref_labels = synthetic_arrays(16, "train", size=32)
    candidates = np.concatenate([ref_images, ref_images[:, :, ::-1]]).astype("float32")
    cand_labels = np.concatenate([ref_labels, ref_labels[:, :, ::-1]])
    for image, label in zip(images, labels):
        match = np.flatnonzero((candidates == image).all(axis=(1, 2, 3)))
        assert match.size, "a training image is not a (mirrored) dataset image"
        assert (cand_labels[match[0]] == label).all()


def test_evaluate_defaults_come_from_the_run_folder(tmp_path):
    import argparse

    from keras_segattn.cli.evaluate import _defaults_from_run

    (tmp_path / "config.json").write_text(
        json.dumps({"dataset": "synthetic", "dataset_config": "32px", "data_dir": "/d"})
    )
    model_path = str(tmp_path / "model.keras")
    blank = dict(dataset=None, dataset_config=None, data_dir=None, manual_dir=None)
    args = argparse.Namespace(model_path=model_path, **blank)
    _defaults_from_run(args)
    assert (args.dataset, args.dataset_config, args.data_dir) == ("synthetic", "32px", "/d")
    # A checkpoint of the run: <run>/checkpoints/ckpt-*.keras.
    args = argparse.Namespace(model_path=str(tmp_path / "checkpoints" / "ckpt-1.keras"), **blank)
    _defaults_from_run(args)
    assert (args.dataset, args.dataset_config) == ("synthetic", "32px")
    # Another dataset given explicitly: nothing is taken from the run.
    args = argparse.Namespace(model_path=model_path, **dict(blank, dataset="ade20k"))
    _defaults_from_run(args)
    assert (args.dataset, args.dataset_config, args.data_dir) == ("ade20k", None, None)
    # No run folder: synthetic with its default config.
    args = argparse.Namespace(model_path=str(tmp_path / "x" / "m.keras"), **blank)
    _defaults_from_run(args)
    assert (args.dataset, args.dataset_config) == ("synthetic", None)


def _run_cli(*args):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "keras_segattn.cli", *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["export"], ["predict"],
                                     ["visualize"]])
def test_help_is_complete_and_imports_no_framework(command):
    """`--help` answers without importing Keras, TensorFlow, JAX or torch (it took 8 s when
    it did); its summary is whole and no default is printed twice."""
    result = _run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"keras", "tensorflow", "jax", "torch", "tensorflow_datasets"}
    help_text = " ".join(result.stdout.split())
    assert "(default: None)" not in help_text
    options = help_text.split("options:")[-1].split(" -")
    assert all(option.count("(default:") <= 1 for option in options), help_text
    if not command:
        assert ("Attention-based semantic segmentation for Keras 3: train, evaluate, export, "
                "predict and visualize.") in help_text


def test_train_help_documents_every_option():
    result = _run_cli("train", "--help")
    text = " ".join(result.stdout.split())
    for option in ("--output-stride", "--warmup-steps", "--distribution", "--seed",
                   "--eval-mode", "--no-tensorboard", "--verbose"):
        after = text.split(option, 2)[-1].split(" --")[0]
        assert len(after.split()) > 2, f"{option} has no help text"
    assert "the last interval is shorter when --steps is not a multiple" in text

import json
import os

import pytest

from keras_segattn.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data_dir, out_dir = str(root / "tfds"), str(root / "run")
    code = main(["train", "--model", "fcn", "--backbone", "resnet_tiny", "--dataset", "synthetic",
                 "--dataset-config", "32px_tiny", "--data-dir", data_dir, "--crop-size", "32",
                 "--batch-size", "4", "--steps", "2", "--eval-every", "2",
                 "--output-dir", out_dir, "--no-tensorboard", "--lr", "0.02"])
    assert code == 0
    return data_dir, out_dir


def test_train_end_to_end(tiny_run, capsys):
    _, out_dir = tiny_run
    for name in ("model.keras", "config.json", "metrics.json", "history.csv",
                 "checkpoints/latest.keras", "checkpoints/ckpt-0000002.keras"):
        assert os.path.exists(os.path.join(out_dir, name)), name
    config = json.load(open(os.path.join(out_dir, "config.json")))
    assert config["model"] == "fcn" and config["crop_size"] == [32, 32]
    assert config["_run"]["num_classes"] == 5
    metrics = json.load(open(os.path.join(out_dir, "metrics.json")))
    assert 0.0 <= metrics["mIoU"] <= 1.0 and metrics["steps"] == 2


def test_evaluate_end_to_end(tiny_run, capsys):
    data_dir, out_dir = tiny_run
    code = main(["evaluate", os.path.join(out_dir, "model.keras"), "--dataset", "synthetic",
                 "--dataset-config", "32px_tiny", "--data-dir", data_dir, "--batch-size", "3"])
    assert code == 0
    out = capsys.readouterr().out
    assert "mIoU:" in out and "mAcc:" in out and "aAcc:" in out
    assert "background" in out and "8 images" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "nosuchnet"], "unknown model 'nosuchnet'"),
    (["train", "--dataset", "imagenet"], "Unknown dataset 'imagenet'"),
    (["train", "--manual-dir", "/nonexistent/dir"], "--manual-dir '/nonexistent/dir' does not"),
    (["train", "--dataset", "cityscapes", "--data-dir", "/tmp/segattn-empty-tfds",
      "--manual-dir", "/tmp"], "leftImg8bit"),
    (["train", "--steps", "10", "--eval-every", "3"], "multiple of eval_every"),
    (["train", "--resume", "/nonexistent/run"], "no run directory"),
    (["evaluate", "/nonexistent/model.keras"], "does not exist"),
    (["evaluate", __file__, "--dataset", "nope"], "Unknown dataset 'nope'"),
])
def test_bad_input_gives_clear_error(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_crop_size_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--crop-size", "abc"])
    assert "expected HxW" in capsys.readouterr().err


def test_synthetic_defaults_resolve_to_the_demo_recipe():
    from keras_segattn.training import TrainConfig

    config = TrainConfig(output_dir="unused").validate()
    assert config.dataset_config == "32px" and config.crop_size == (32, 32)
    assert config.augment == "flip" and config.optimizer == "adamw"
    config = TrainConfig(dataset="cityscapes", output_dir="unused").validate()
    assert config.augment == "full" and config.optimizer == "sgd"
    assert config.dataset_config is None and config.crop_size is None


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


def test_bad_augment_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--augment", "lots"])
    assert "--augment" in capsys.readouterr().err


def test_evaluate_defaults_come_from_the_run_folder(tmp_path):
    import argparse
    import json

    from keras_segattn.cli.evaluate import _defaults_from_run

    (tmp_path / "config.json").write_text(
        json.dumps({"dataset": "synthetic", "dataset_config": "32px", "data_dir": "/d"})
    )
    model_path = str(tmp_path / "model.keras")
    blank = dict(dataset=None, dataset_config=None, data_dir=None, manual_dir=None)
    args = argparse.Namespace(model_path=model_path, **blank)
    _defaults_from_run(args)
    assert (args.dataset, args.dataset_config, args.data_dir) == ("synthetic", "32px", "/d")
    # Another dataset given explicitly: nothing is taken from the run.
    args = argparse.Namespace(model_path=model_path, **dict(blank, dataset="ade20k"))
    _defaults_from_run(args)
    assert (args.dataset, args.dataset_config, args.data_dir) == ("ade20k", None, None)
    # No run folder: synthetic with its default config.
    args = argparse.Namespace(model_path=str(tmp_path / "x" / "m.keras"), **blank)
    _defaults_from_run(args)
    assert (args.dataset, args.dataset_config) == ("synthetic", None)

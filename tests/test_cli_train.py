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

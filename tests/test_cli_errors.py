"""Every command-line failure is one line on stderr with a non-zero exit code."""

import os

import keras
import numpy as np
import pytest

from keras_segattn.cli import main


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing on stderr"
    return err[-1]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A small dict-output segmentation model saved as .keras (the predict/evaluate input)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, {"logits": keras.layers.Conv2D(5, 1)(x)})
    path = str(tmp_path_factory.mktemp("model") / "m.keras")
    model.save(path)
    return path


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "nosuchnet"], "unknown model 'nosuchnet'; choose from"),
    (["train", "--dataset", "imagenet"], "Unknown dataset 'imagenet'. keras_segattn.data knows "
                                         "['ade20k', 'cityscapes', 'pascal_context', "
                                         "'synthetic', 'voc_aug']."),
    (["train", "--manual-dir", "/nonexistent/dir"],
     "--manual-dir '/nonexistent/dir' does not exist or is not a directory."),
    (["train", "--steps", "0"], "steps must be a positive integer; got 0."),
    (["train", "--eval-every", "-5"], "eval_every must be a positive integer; got -5."),
    (["train", "--batch-size", "0"], "batch_size must be a positive integer; got 0."),
    (["train", "--warmup-steps", "1500"],
     "warmup_steps must be an integer in [0, steps=1500); got 1500."),
    (["train", "--grad-accum", "1"], "gradient_accumulation_steps must be >= 2 (or None); got 1."),
    (["train", "--lr", "-1"], "learning_rate must be > 0; got -1.0."),
    (["train", "--lr", "nan"], "learning_rate must be a finite number; got nan."),
    (["train", "--weight-decay", "inf"], "weight_decay must be a finite number; got inf."),
    (["train", "--dataset-config", "bogus"], "unknown config 'bogus' for dataset 'synthetic'; "
                                             "choose from ['64px', '32px', '96px_far', "
                                             "'32px_tiny']."),
    (["train", "--dataset", "ade20k", "--dataset-config", "x"],
     "unknown config 'x' for dataset 'ade20k'; it has no builder configs."),
    (["train", "--dataset", "cityscapes", "--dataset-config", "stereo_disparity"],
     "unknown config 'stereo_disparity' for dataset 'cityscapes'; choose from "
     "['semantic_segmentation', 'semantic_segmentation_extra']."),
    (["train", "--resume", "/nonexistent/run"], "--resume: no run directory '/nonexistent/run'."),
    (["evaluate", "/nonexistent/model.keras"],
     "model file '/nonexistent/model.keras' does not exist."),
])
def test_bad_input_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"keras-segattn {argv[0]}: error: {message}"), err[0]


def test_num_classes_zero_is_refused():
    from keras_segattn.training import TrainConfig

    with pytest.raises(ValueError) as info:
        TrainConfig(num_classes=0, output_dir="unused").validate()
    assert str(info.value) == "num_classes must be a positive integer; got 0."


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--crop-size", "abc"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["keras-segattn train: error: argument --crop-size: expected HxW or one "
                   "integer, got 'abc' (see keras-segattn train --help)"]
    with pytest.raises(SystemExit):
        main(["train", "--augment", "lots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --augment: invalid choice: 'lots'" in err[0]


def test_output_dir_below_a_file(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    out = str(blocker / "run")
    assert main(["train", "--output-dir", out, "--steps", "1", "--eval-every", "1"]) == 2
    assert _error_line(capsys) == (
        f"keras-segattn train: error: output_dir {out!r} cannot be created: {str(blocker)!r} "
        "is a file, not a folder; choose another path.")


def test_export_options_are_checked_before_calibration_data(saved_model, tmp_path, capsys):
    """int8 without --format tflite prepared the calibration dataset first, then failed."""
    data_dir = tmp_path / "tfds"
    assert main(["export", saved_model, "--quantization", "int8", "--data-dir",
                 str(data_dir)]) == 2
    assert _error_line(capsys) == ("keras-segattn export: error: export: quantization='int8' "
                                   "is only supported for format='tflite'")
    assert main(["export", saved_model, "--format", "tflite", "--quantization", "int8",
                 "--data-dir", str(data_dir)]) == 2
    assert _error_line(capsys).startswith(
        "keras-segattn export: error: export: TFLite needs a fixed input size: pass "
        "input_size=(height, width) (CLI: --input-size H W).")
    assert not data_dir.exists()


def test_a_run_that_fails_while_set_up_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "runs" / "r1"
    argv = ["train", "--backbone", "resnet19", "--output-dir", str(out), "--dataset-config",
            "32px_tiny", "--steps", "1", "--eval-every", "1"]
    assert main(argv) == 2
    assert _error_line(capsys).startswith(
        "keras-segattn train: error: Unknown backbone 'resnet19' (did you mean resnet18")
    assert os.listdir(tmp_path) == []  # neither the run folder nor its new parent


def test_a_run_folder_of_the_earlier_format_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "old_run"
    (run / "backup").mkdir(parents=True)
    (run / "backup" / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    assert main(["train", "--output-dir", str(run), "--steps", "1", "--eval-every", "1"]) == 2
    assert _error_line(capsys) == (
        f"keras-segattn train: error: {run} holds a run of an earlier keras-segattn (Keras "
        "BackupAndRestore files in backup/), which cannot be continued exactly; choose another "
        "output_dir (its checkpoints/ stay usable with keras-segattn evaluate/export).")


@pytest.mark.parametrize("content, problem", [
    (b"", "is empty (0 bytes): the save that wrote it did not finish; use an earlier "
          "checkpoint or save the model again."),
    (None, "is not a complete .keras archive (truncated or corrupt); use an earlier "
           "checkpoint or save the model again."),
])
@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "visualize"])
def test_empty_or_truncated_keras_file(saved_model, tmp_path, capsys, content, problem, command):
    path = tmp_path / "broken.keras"
    if content is None:  # the first half of a real .keras file
        data = open(saved_model, "rb").read()
        content = data[: len(data) // 2]
        problem = f"({len(content)} bytes) " + problem
    path.write_bytes(content)
    argv = {"evaluate": ["evaluate", str(path)],
            "predict": ["predict", "--model", str(path), str(tmp_path), "--output-dir",
                        str(tmp_path / "out")],
            "export": ["export", str(path)],
            "visualize": ["visualize", "--model", str(path), "--image", "x.png",
                          "--output", str(tmp_path / "v.png")]}[command]
    assert main(argv) == 2
    assert _error_line(capsys) == (
        f"keras-segattn {command}: error: model file {str(path)!r} {problem}")


def test_predict_exits_non_zero_when_an_input_fails(saved_model, tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(images / "good.png")
    (images / "broken.png").write_bytes(b"not an image")
    (tmp_path / "empty").mkdir()
    code = main(["predict", "--model", saved_model, str(images), str(tmp_path / "empty"),
                 "--output-dir", str(tmp_path / "out"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "segmented 1 image(s)" in err and "2 failed" in err
    assert f"failed: {tmp_path / 'empty'}: folder holds no image files" in err
    assert "failed: " + str(images / "broken.png") + ": cannot read image" in err
    assert (tmp_path / "out" / "good_classes.png").exists()


def test_predict_on_an_empty_folder_fails(saved_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["predict", "--model", saved_model, str(tmp_path / "empty"),
                 "--output-dir", str(tmp_path / "out"), "--no-progress"])
    assert code == 1
    assert _error_line(capsys) == (
        f"failed: {tmp_path / 'empty'}: folder holds no image files (.png, .jpg, .jpeg, .bmp, "
        ".tif, .tiff, .webp, .gif, .ppm, .pgm)")


def test_unexpected_errors_are_one_line_with_a_hint(monkeypatch, capsys):
    from keras_segattn.cli import evaluate

    def boom(args):
        raise KeyError("boom")

    monkeypatch.setattr(evaluate, "run", boom)
    assert main(["evaluate", "m.keras"]) == 1
    assert _error_line(capsys) == ("keras-segattn evaluate: error: KeyError: 'boom' "
                                   "(--verbose shows the traceback)")

"""``keras-segattn predict/evaluate --model <preset>``: palette, class names and protocol.

Offline: the preset is a directory saved from a random-init tiny FCN with a recorded
protocol (keep-ratio scale 48x48, sliding 32x32 windows with stride 16, ms+flip scales 0.5
and 1.0). Which protocol ran is checked on what the model is fed: the window sizes and counts
follow mmseg's rules, written out here (keep-ratio factor ``min(long / max(H, W), short /
min(H, W))``, sides ``int(x * f + 0.5)``; ``h_grids = max(H - crop + stride - 1, 0) //
stride + 1``).
"""

import json
import os

import numpy as np
import pytest

from keras_segattn import models
from keras_segattn.cli import main
from keras_segattn.data import dataset_info
from keras_segattn.inference import modes
from keras_segattn.models import presets

PALETTE = [[10, 20, 30], [200, 0, 0], [0, 200, 0], [0, 0, 200], [250, 250, 0]]
PROTOCOL = {"mode": "slide", "scale": [48, 48], "crop_size": [32, 32], "stride": [16, 16]}


@pytest.fixture(scope="module")
def preset_dir(tmp_path_factory):
    model = models.FCN(5, backbone="resnet_tiny_v1c", channels=8, aux_channels=8)
    directory = str(tmp_path_factory.mktemp("preset") / "tiny_fcn_synthetic")
    models.save_to_preset(model, directory, class_names=list(dataset_info("synthetic").class_names),
                          palette=PALETTE, dataset="synthetic", evaluation=PROTOCOL,
                          ms_flip_scales=[0.5, 1.0])
    return directory


@pytest.fixture
def fed(monkeypatch):
    """The (height, width) of every batch the model is run on."""
    shapes = []
    forward = modes.forward

    def spy(model, batch):
        shapes.append(tuple(batch.shape[1:3]))
        return forward(model, batch)

    monkeypatch.setattr(modes, "forward", spy)
    return shapes


def _keep_ratio(size, scale):
    factor = min(max(scale) / max(size), min(scale) / min(size))
    return tuple(int(s * factor + 0.5) for s in size)


def _windows(size, crop=32, stride=16):
    grids = [max(s - crop + stride - 1, 0) // stride + 1 for s in size]
    return [tuple(min(s, crop) for s in size)] * (grids[0] * grids[1])


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    from PIL import Image

    path = str(tmp_path_factory.mktemp("images") / "street.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 40, 3), np.uint8)).save(path)
    return path


def _predict(street, preset, out, *extra):
    return main(["predict", street, "--model", preset, "--output-dir", str(out), "--no-progress",
                 *extra])


def test_predict_with_a_preset_directory(preset_dir, street, tmp_path, fed, capsys):
    from PIL import Image

    assert _predict(street, preset_dir, tmp_path / "out") == 0
    # The preset's protocol: keep-ratio resize 32x40 -> 38x48, then 32x32 windows, stride 16.
    assert _keep_ratio((32, 40), (48, 48)) == (38, 48)
    assert fed == _windows((38, 48)) == [(32, 32)] * 4
    assert "predict: mode=slide crop=32x32 stride=16x16 scale=48x48" in capsys.readouterr().err
    # The preset's palette and class names.
    classes = np.asarray(Image.open(tmp_path / "out" / "street_classes.png"))
    color = np.asarray(Image.open(tmp_path / "out" / "street_color.png"))
    assert classes.shape == (32, 40) and classes.max() < 5
    np.testing.assert_array_equal(color, np.asarray(PALETTE, np.uint8)[classes])
    legend = json.loads((tmp_path / "out" / "legend.json").read_text())
    assert legend == [{"index": i, "name": name, "color": PALETTE[i]} for i, name in
                      enumerate(dataset_info("synthetic").class_names)]
    # The same classes as the library call with that protocol.
    model = models.from_preset(preset_dir)
    image = np.asarray(Image.open(street), "float32")[None]
    expected = modes.predict_logits(model, image, mode="slide", crop_size=(32, 32),
                                    stride=(16, 16), scale=(48, 48))
    np.testing.assert_array_equal(classes, np.argmax(expected[0], -1))


@pytest.mark.parametrize("extra, expected", [
    (["--protocol", "none"], [(32, 40)]),                            # the image as it is
    (["--mode", "whole"], [(38, 48)]),                               # resized, one pass
    (["--crop", "40", "48"], [(38, 48)]),                            # one window: the image
    # ms+flip, scales relative to 48x48: 0.5 -> 19x24 (smaller than the crop: one window),
    # 1.0 -> 38x48 (4 windows); each scale also flipped.
    (["--protocol", "ms_flip"], [(19, 24)] * 2 + [(32, 32)] * 8),
    (["--palette", "voc"], [(32, 32)] * 4),
])
def test_predict_protocol_and_overrides(preset_dir, street, tmp_path, fed, extra, expected):
    assert _keep_ratio((32, 40), (24, 24)) == (19, 24)
    assert _predict(street, preset_dir, tmp_path / "out", *extra) == 0
    assert fed == expected
    if "--palette" in extra:
        from PIL import Image

        from keras_segattn.palettes import get_palette

        classes = np.asarray(Image.open(tmp_path / "out" / "street_classes.png"))
        color = np.asarray(Image.open(tmp_path / "out" / "street_color.png"))
        np.testing.assert_array_equal(color, get_palette("voc")[classes])


def test_unknown_preset_name_is_one_line(street, tmp_path, capsys):
    assert _predict(street, "danet_resnet101_cityscape", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(
        "keras-segattn predict: error: Unknown preset 'danet_resnet101_cityscape'. Did you mean "
        "'danet_resnet101_cityscapes', ")
    assert "keras_segattn.models.list_presets() lists the" in err[0]
    assert main(["evaluate", "--model", "isanet_resnet50_ade2k"]) == 2
    assert "Did you mean 'isanet_resnet50_ade20k'" in capsys.readouterr().err


def test_preset_without_network_is_one_line(street, tmp_path, monkeypatch, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    name = presets._resolve("fcn_resnet18_cityscapes")
    url = f"http://127.0.0.1:{port}/" + presets.PRESETS[name]["url"].rsplit("/", 1)[1]
    monkeypatch.setitem(presets.PRESETS, name, dict(presets.PRESETS[name], url=url))
    cache = tmp_path / "cache"
    code = _predict(street, "fcn_resnet18_cityscapes", tmp_path / "out", "--cache-dir", str(cache))
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    manual = presets.checkpoint_path("fcn_resnet18_cityscapes", cache)
    assert err[0].startswith(f"keras-segattn predict: error: Could not download the checkpoint "
                             f"of preset '{name}' from {url}")
    assert f"save it as {manual}" in err[0]


def test_protocol_errors(preset_dir, tmp_path, capsys):
    saved = tmp_path / "m.keras"
    saved.write_bytes(b"x")
    assert main(["evaluate", str(saved), "--protocol", "ms_flip"]) == 2
    assert capsys.readouterr().err.strip() == (
        "keras-segattn evaluate: error: --protocol ms_flip needs a preset (a name or a preset "
        "directory) as --model: a saved model records no evaluation protocol; use "
        "--mode/--crop/--stride/--scales/--flip.")
    assert main(["evaluate", str(saved), "--model", preset_dir]) == 2
    assert "give the model once: MODEL_PATH" in capsys.readouterr().err
    assert main(["evaluate"]) == 2
    assert capsys.readouterr().err.strip().startswith("keras-segattn evaluate: error: no model:")
    assert main(["evaluate", "--model", preset_dir, "--dataset", "cityscapes"]) == 2
    assert capsys.readouterr().err.strip() == (
        "keras-segattn evaluate: error: the model predicts 5 classes but dataset 'cityscapes' "
        "has 19; choose the preset's dataset with --dataset.")


def test_evaluate_applies_the_presets_protocol(preset_dir, tmp_path, fed, capsys):
    # The dataset comes from the preset (synthetic); 32x32 images -> 48x48 -> 4 windows each.
    data = ["--dataset-config", "32px_tiny", "--data-dir", str(tmp_path / "tfds"),
            "--max-batches", "2"]
    assert main(["evaluate", "--model", preset_dir, *data]) == 0
    out = capsys.readouterr().out
    assert "mIoU:" in out and "background" in out
    assert "2 images" in out and "protocol=single_scale mode=slide crop=32x32 stride=16x16 " \
                                 "scale=48x48" in out
    assert fed == [(32, 32)] * 8
    fed.clear()
    assert main(["evaluate", "--model", preset_dir, *data, "--protocol", "ms_flip"]) == 0
    # 0.5 -> 24x24 (one window), 1.0 -> 48x48 (4 windows); with flips; two images.
    assert fed == ([(24, 24)] * 2 + [(32, 32)] * 8) * 2
    assert "protocol=ms_flip mode=multiscale crop=32x32 stride=16x16 scale=48x48 " \
           "scales=0.5,1 flip" in capsys.readouterr().out

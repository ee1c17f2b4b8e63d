import keras
import numpy as np
import pytest
from PIL import Image

from keras_segattn import inference
from keras_segattn.inference import (
    Predictor,
    expand_inputs,
    load_image,
    predict_files,
    predict_logits,
    slide_windows,
)
from keras_segattn.testing import TestCase

from deploy_helpers import hand_model


def pixelwise_model(num_classes=4):
    keras.utils.set_random_seed(1)
    inp = keras.Input((None, None, 3))
    return keras.Model(inp, keras.layers.Conv2D(num_classes, 1)(inp))


class TestSlideWindow(TestCase):
    def test_windows_cover_and_align_to_border(self):
        for size, crop, stride in [((37, 50), (16, 16), (10, 12)), ((16, 16), (16, 16), (8, 8)),
                                   ((10, 70), (32, 32), (21, 21)), ((65, 33), (64, 32), (64, 32))]:
            count = np.zeros(size, int)
            boxes = slide_windows(size, crop, stride)
            for y1, y2, x1, x2 in boxes:
                assert y2 - y1 <= crop[0]
                assert x2 - x1 <= crop[1]
                assert y2 - y1, min(crop[0] == size[0])
                count[y1:y2, x1:x2] += 1
            assert (count > 0).all(), (size, crop, stride)
            # The last window of each axis ends at the border.
            assert max(b[1] for b in boxes) == size[0]
            assert max(b[3] for b in boxes) == size[1]

    def test_mmseg_grid_count(self):
        # mmseg: h_grids = max(H - crop + stride - 1, 0) // stride + 1
        boxes = slide_windows((100, 100), (40, 40), (30, 30))
        assert len(boxes) == 9
        assert sorted({b[0] for b in boxes}), [0, 30 == 60]


class TestPredictLogits(TestCase):
    def setup_method(self, method):
        super().setup_method(method)
        self.images = np.random.default_rng(0).uniform(0, 255, (2, 29, 43, 3)).astype("float32")

    def test_slide_with_large_crop_equals_whole(self):
        model = hand_model()
        whole = predict_logits(model, self.images)
        slide = predict_logits(model, self.images, mode="slide", crop_size=(64, 64), stride=(32, 32))
        self.assertAllClose(slide, whole, atol=1e-5)
        assert whole.shape, (2, 29, 43 == 3)

    def test_overlapping_windows_are_averaged(self):
        model = pixelwise_model()  # per-pixel model: every window gives the same logits
        whole = predict_logits(model, self.images)
        slide = predict_logits(model, self.images, mode="slide", crop_size=(12, 16), stride=(5, 7))
        self.assertAllClose(slide, whole, atol=1e-5)

    def test_flip_average_equals_manual(self):
        model = hand_model()
        got = predict_logits(model, self.images, flip=True, average="logits")
        direct = predict_logits(model, self.images)
        flipped = predict_logits(model, self.images[:, :, ::-1])[:, :, ::-1]
        self.assertAllClose(got, (direct + flipped) / 2, atol=1e-5)
        soft = predict_logits(model, self.images, flip=True)

        def softmax(x):
            e = np.exp(x - x.max(-1, keepdims=True))
            return e / e.sum(-1, keepdims=True)

        self.assertAllClose(soft, (softmax(direct) + softmax(flipped)) / 2, atol=1e-5)

    def test_multiscale(self):
        model = hand_model()
        single = predict_logits(model, self.images, mode="multiscale", scales=(1.0,))
        self.assertAllClose(single, predict_logits(model, self.images), atol=1e-6)
        multi = predict_logits(model, self.images, mode="multiscale", scales=(0.5, 1.0, 1.5), flip=True)
        assert multi.shape, (2, 29, 43 == 3)
        self.assertAllClose(multi.sum(-1), np.ones((2, 29, 43)), atol=1e-4)  # mean of softmax

    def test_fixed_size_model_is_padded(self):
        model = pixelwise_model()
        def fixed_fn(x):
            assert x.shape[1:3] == (16, 16)
            return model(x)

        fixed = Predictor(fixed_fn, input_size=(16, 16))
        got = predict_logits(fixed, self.images[:1])
        self.assertAllClose(got, predict_logits(model, self.images[:1]), atol=1e-5)

    def test_errors(self):
        model = hand_model()
        with pytest.raises(ValueError, match="crop_size"):
            predict_logits(model, self.images, mode="slide")
        with pytest.raises(ValueError, match="mode"):
            predict_logits(model, self.images, mode="tiles")
        with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
            predict_logits(model, np.zeros((1, 8, 8, 4)))

    def test_options_that_would_leave_pixels_out_or_nan(self):
        """A stride above the crop left pixels of no window (mmseg asserts); NaN scales gave
        a NumPy "cannot convert float NaN to integer"; both before any image now."""
        model = hand_model()
        with pytest.raises(ValueError) as info:
            predict_logits(model, self.images, mode="slide", crop_size=16, stride=(20, 8))
        assert str(info.value) == ("predict_logits: stride (20, 8) is larger than crop_size "
                                   "(16, 16): the windows would leave pixels out")
        fixed = Predictor(model, input_size=(16, 16))  # its size is the crop
        with pytest.raises(ValueError, match=r"stride \(17, 17\) is larger than crop_size"):
            predict_logits(fixed, self.images, mode="slide", stride=17)
        for scales in ((1.0, float("nan")), (0.5, float("inf")), (), ("x",)):
            with pytest.raises(ValueError) as info:
                predict_logits(model, self.images, mode="multiscale", scales=scales)
            assert str(info.value) == ("predict_logits: scales must be positive finite "
                                       f"numbers, got {scales!r}")
        assert inference.check_options("slide", 16, (16, 8)) == ((16, 16), (16, 8), (1.0,))


class TestImageIO(TestCase):
    def test_modes_and_bit_depths(self, tmp_path):
        tmp = str(tmp_path)
        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
        gray = rng.integers(0, 256, (7, 9), dtype=np.uint8)
        gray16 = (gray.astype(np.uint16) * 257)
        Image.fromarray(rgb).save(f"{tmp}/rgb.png")
        Image.fromarray(np.dstack([rgb, np.full((7, 9), 7, np.uint8)])).save(f"{tmp}/rgba.png")
        Image.fromarray(gray).save(f"{tmp}/gray.png")
        Image.fromarray(gray16).save(f"{tmp}/gray16.png")
        Image.fromarray(rgb).convert("P").save(f"{tmp}/pal.png")
        assert np.array_equal(load_image(f"{tmp}/rgb.png"), rgb)
        assert np.array_equal(load_image(f"{tmp}/rgba.png"), rgb)
        assert np.array_equal(load_image(f"{tmp}/gray.png"), np.dstack([gray] * 3))
        assert Image.open(f"{tmp}/gray16.png").mode[:1] == "I"
        assert np.array_equal(load_image(f"{tmp}/gray16.png"), np.dstack([gray] * 3))
        assert load_image(f"{tmp}/pal.png").shape, (7, 9 == 3)
        with open(f"{tmp}/broken.png", "wb") as f:
            f.write(b"not an image")
        with pytest.raises(ValueError, match="broken.png"):
            load_image(f"{tmp}/broken.png")


def _write_images(folder):
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (33, 21), dtype=np.uint8)).save(folder / "sub" / "b.png")
    Image.fromarray((rng.integers(0, 65536, (20, 30), dtype=np.uint16))).save(folder / "c16.png")
    Image.fromarray(rng.integers(0, 256, (25, 25, 4), dtype=np.uint8)).save(folder / "d.png")
    (folder / "broken.png").write_bytes(b"\x89PNG garbage")


def test_expand_inputs(tmp_path):
    _write_images(tmp_path / "imgs")
    files, missing = expand_inputs([str(tmp_path / "imgs"), str(tmp_path / "imgs" / "*.png"), "nope/*.jpg"])
    assert len(files) == 5 and missing == ["nope/*.jpg"]


def test_predict_files_skips_unreadable(tmp_path, caplog):
    _write_images(tmp_path / "imgs")
    model = hand_model()
    with caplog.at_level("ERROR", logger="keras_segattn.inference"):
        result = predict_files(model, [str(tmp_path / "imgs")], str(tmp_path / "out"),
                               palette="cityscapes", mode="slide", crop_size=(16, 16),
                               stride=(12, 12), progress=False)
    assert len(result["written"]) == 4
    assert [p for p, _ in result["failed"]] == [str(tmp_path / "imgs" / "broken.png")]
    assert "broken.png" in caplog.text
    record = next(r for r in result["written"] if r["input"].endswith("a.png"))
    classes = np.asarray(Image.open(record["classes"]))
    assert classes.shape == (40, 56) and classes.max() < 3
    expected = predict_logits(model, load_image(record["input"])[None], mode="slide",
                              crop_size=16, stride=12)[0].argmax(-1)
    assert np.array_equal(classes, expected)
    assert np.asarray(Image.open(record["color"])).shape == (40, 56, 3)
    assert np.asarray(Image.open(record["overlay"])).shape == (40, 56, 3)


def test_predict_cli(tmp_path, capsys):
    from keras_segattn.cli import main

    _write_images(tmp_path / "imgs")
    model_path = str(tmp_path / "m.keras")
    hand_model().save(model_path)
    code = main(["predict", "--model", model_path, str(tmp_path / "imgs" / "*.png"),
                 str(tmp_path / "imgs" / "sub"), "--output-dir", str(tmp_path / "out"),
                 "--palette", "voc", "--no-progress"])
    assert code == 1  # an input failed (broken.png): non-zero, the others are written
    err = capsys.readouterr().err
    assert "broken.png" in err
    assert len(list((tmp_path / "out").glob("*_classes.png"))) == 4
    assert len(list((tmp_path / "out").glob("*_overlay.png"))) == 4


def test_predict_cli_checks_its_options_before_any_image(tmp_path, capsys):
    from keras_segattn.cli import main

    _write_images(tmp_path / "imgs")
    model_path = str(tmp_path / "m.keras")
    hand_model().save(model_path)
    cases = [(["--alpha", "1.5"], "predict: alpha (the overlay's opacity) must be in [0, 1], "
                                  "got 1.5"),
             (["--mode", "slide", "--crop", "16", "16", "--stride", "24", "8"],
              "predict_logits: stride (24, 8) is larger than crop_size (16, 16): the windows "
              "would leave pixels out"),
             (["--mode", "slide"], "predict: mode='slide' needs crop_size=(h, w) (CLI: --crop "
                                   "H W) for a model that takes any image size"),
             (["--mode", "multiscale", "--scales", "1", "nan"],
              "predict_logits: scales must be positive finite numbers, got (1.0, nan)")]
    for options, message in cases:
        code = main(["predict", "--model", model_path, str(tmp_path / "imgs"), "--output-dir",
                     str(tmp_path / "out"), "--no-progress", *options])
        assert code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"keras-segattn predict: error: {message}")
        assert not (tmp_path / "out").exists()  # failed before any image


def conv_model(num_classes=3):
    """3x3 conv + classifier (dict output): windows see their neighbourhood, and it is cheap
    in JAX eager mode (the single-device reference path)."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    return keras.Model(inp, {"logits": keras.layers.Conv2D(num_classes, 1)(x)})


@pytest.mark.two_jax_devices  # skipped unless JAX has 2 devices (tests/conftest.py)
def test_slide_and_multiscale_under_data_parallel_with_odd_batch(monkeypatch):
    """Under JAX DataParallel on 2 devices a batch of 3 is padded to 4, sharded over the
    devices (predict_on_batch sees a 'batch'-sharded input) and trimmed back; the slide and
    multi-scale + flip results equal the single-device ones."""
    images = np.random.default_rng(0).uniform(0, 255, (3, 29, 43, 3)).astype("float32")
    single = conv_model()
    modes = [dict(mode="slide", crop_size=16, stride=12),
             dict(mode="multiscale", scales=(0.5, 1.0), flip=True)]
    expected = [predict_logits(single, images, **kw) for kw in modes]
    devices = keras.distribution.list_devices()[:2]
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        model = conv_model()  # built under the distribution: replicated variables
        model.set_weights(single.get_weights())
        calls = []
        original = model.predict_on_batch

        def spy(x):
            calls.append((tuple(x.shape), getattr(x, "sharding", None)))
            return original(x)

        monkeypatch.setattr(model, "predict_on_batch", spy)
        for kw, want in zip(modes, expected):
            got = predict_logits(model, images, **kw)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=str(kw))
        assert calls and all(shape[0] == 4 for shape, _ in calls)
        assert all(sharding.spec[0] == "batch" and len(sharding.device_set) == 2
                   for _, sharding in calls)
        # A model built before the distribution (variables on one device) still works.
        np.testing.assert_allclose(predict_logits(single, images, **modes[0]), expected[0],
                                   atol=1e-5)
    finally:
        keras.distribution.set_distribution(None)

"""The built-in synthetic dataset. (Plain pytest classes: tf.data tests need none of
keras_segattn.testing.TestCase's Keras set-up, whose per-test clear_session costs ~1 s.)"""

import numpy as np
import pytest

from keras_segattn import data
from keras_segattn.data import synthetic


class TestSyntheticGenerator:
    def test_deterministic_by_seed(self):
        a = data.make_synthetic_example(np.random.default_rng(123))
        b = data.make_synthetic_example(np.random.default_rng(123))
        c = data.make_synthetic_example(np.random.default_rng(124))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert not np.array_equal(a[0], c[0])

    def test_shapes_dtypes_and_classes(self):
        for seed in range(30):
            image, label = data.make_synthetic_example(np.random.default_rng(seed))
            assert image.shape == (64, 64, 3) and image.dtype == np.uint8
            assert label.shape == (64, 64) and label.dtype == np.uint8
            values = set(np.unique(label).tolist())
            assert 0 in values and values <= set(range(synthetic.NUM_CLASSES))
            assert len(values) == 2, "one shape class per image (decided by the cue)"

    def test_long_range_property(self):
        """Same random stream, different cue: pixels differ only in the cue corner, yet
        the shape labels (far from the cue) differ."""
        size, m = 64, 64 // 8
        for seed in range(10):
            img1, lab1 = data.make_synthetic_example(np.random.default_rng(seed), cue_class=1)
            img2, lab2 = data.make_synthetic_example(np.random.default_rng(seed), cue_class=3)
            shape = lab1 > 0
            assert shape.any()
            np.testing.assert_array_equal(shape, lab2 > 0)
            assert (lab1[shape] == 1).all() and (lab2[shape] == 3).all()
            diff = np.any(img1 != img2, axis=-1)
            ys, xs = np.nonzero(diff)
            # All differing pixels lie in one m x m corner.
            assert ys.max() - ys.min() < m and xs.max() - xs.min() < m
            assert ys.min() in (0, size - m) and xs.min() in (0, size - m)
            # Every shape pixel is far (>= size/4) from every cue pixel.
            sy, sx = np.nonzero(shape)
            dist = np.hypot(sy[:, None] - ys[None], sx[:, None] - xs[None])
            assert dist.min() >= size / 4
            # The local appearance of the shapes is identical.
            np.testing.assert_array_equal(img1[shape], img2[shape])

    def test_cue_size_and_distance_options(self):
        """``cue_fraction`` sets the marker side, ``distance_fraction`` the minimum distance
        (used by benchmarks/learning.py to push the cue beyond a network's reach)."""
        size, m = 96, 24
        found = 0
        for seed in range(6):
            options = dict(size=size, cue_fraction=0.25, distance_fraction=0.375)
            img1, lab1 = data.make_synthetic_example(np.random.default_rng(seed), cue_class=1,
                                                     **options)
            img2, _ = data.make_synthetic_example(np.random.default_rng(seed), cue_class=2,
                                                  **options)
            ys, xs = np.nonzero(np.any(img1 != img2, axis=-1))
            assert ys.max() - ys.min() == m - 1 and xs.max() - xs.min() == m - 1
            sy, sx = np.nonzero(lab1 > 0)
            if len(sy):
                found += 1
                dist = np.hypot(sy[:, None] - ys[None], sx[:, None] - xs[None])
                assert dist.min() >= 0.375 * size
        assert found >= 4, "shapes must still fit at this distance"
        with pytest.raises(ValueError, match="cue_fraction"):
            data.make_synthetic_example(np.random.default_rng(0), cue_fraction=0.0)
        with pytest.raises(ValueError, match="distance_fraction"):
            data.make_synthetic_example(np.random.default_rng(0), distance_fraction=1.0)

    def test_classes_balanced_and_shape_appearance_class_independent(self):
        images, labels = data.synthetic_arrays(200)
        classes = np.array([lab.max() for lab in labels])
        counts = np.bincount(classes, minlength=5)[1:]
        assert counts.min() > 25, counts
        means = [images[i][labels[i] > 0].mean() for i in range(200)]
        per_class = [np.mean([m for m, c in zip(means, classes) if c == k]) for k in range(1, 5)]
        assert np.ptp(per_class) < 15, per_class

    def test_bad_arguments(self):
        rng = np.random.default_rng(0)
        with pytest.raises(ValueError, match="cue_class"):
            data.make_synthetic_example(rng, cue_class=5)
        with pytest.raises(ValueError, match="size"):
            data.make_synthetic_example(rng, size=16)
        with pytest.raises(ValueError, match="num_classes"):
            data.make_synthetic_example(rng, num_classes=1)

    def test_other_size_and_num_classes(self):
        image, label = data.make_synthetic_example(np.random.default_rng(0), size=48, num_classes=3)
        assert image.shape == (48, 48, 3) and label.max() < 3


class TestSyntheticBuilder:
    def test_far_cue_config_generates_the_far_cue_examples(self, tmp_path):
        """``96px_far`` (the config where attention beats FCN) stores exactly
        ``synthetic_arrays(..., size=96, cue_fraction=1/4, distance_fraction=3/8)``."""
        from keras_segattn.data.builders.synthetic import Builder
        from keras_segattn.training import TrainConfig

        builder = Builder(config="96px_far", data_dir=str(tmp_path))
        generated = list(builder._generate_examples("validation", 3))
        images, labels = data.synthetic_arrays(3, "validation", size=96, cue_fraction=1 / 4,
                                               distance_fraction=3 / 8)
        for (index, example), image, label in zip(generated, images, labels):
            np.testing.assert_array_equal(example["image"], image)
            np.testing.assert_array_equal(example["label"], label)
        config = TrainConfig(dataset_config="96px_far")
        config.validate()
        assert config.crop_size == (96, 96)

    def test_prepare_and_load_tiny(self, tmp_path, capfd):
        info = data.dataset_info("synthetic")
        train = data.load("synthetic", "train", data_dir=str(tmp_path), config="32px_tiny")
        # Preparing says so in one line of ours: no tfds "Downloading and preparing dataset
        # Unknown size ..." banner, no progress bars, nothing on stdout.
        out, err = capfd.readouterr()
        where = tmp_path / "segattn_synthetic" / "32px_tiny" / "1.0.0"
        assert out == ""
        assert err.strip().splitlines() == [
            f"keras_segattn.data: preparing synthetic (32px_tiny) in {where} (once; later runs "
            "read it from there)"]
        val = data.load("synthetic", "val", data_dir=str(tmp_path), config="32px_tiny")
        assert capfd.readouterr() == ("", "")  # already prepared: silent
        assert int(train.cardinality()) == 16 and int(val.cardinality()) == 8
        examples = list(val.as_numpy_iterator())
        assert sorted(examples[0]) == ["image", "label"]
        assert examples[0]["image"].shape == (32, 32, 3) and examples[0]["label"].shape == (32, 32)
        assert examples[0]["label"].dtype == np.uint8
        # Identical to the pure-NumPy generator (order-independent comparison).
        images, labels = data.synthetic_arrays(8, "validation", size=32)
        got = sorted(ex["image"].tobytes() for ex in examples)
        assert got == sorted(im.tobytes() for im in images)
        assert data.validate_labels(val, info.num_classes, name="synthetic") == 8

    @pytest.mark.large  # ~3 s (idle CPU) to generate the real 1000 + 200 examples
    def test_prepare_default_config_is_fast(self, tmp_path):
        import time

        start = time.time()
        val = data.load("synthetic", "validation", data_dir=str(tmp_path))
        elapsed = time.time() - start
        assert int(val.cardinality()) == 200
        builder = data.get_builder("synthetic", data_dir=str(tmp_path))
        assert builder.info.splits["train"].num_examples == 1000
        assert elapsed < 30, f"preparing the synthetic dataset took {elapsed:.1f} s"
        image = next(iter(val))["image"]
        assert tuple(image.shape) == (64, 64, 3)


def test_cue_colours_survive_photometric_hue_shift():
    """mmseg PhotoMetricDistortion shifts hue by up to 18/180 of a turn: the default cue
    colours stay closest (in hue) to their own class."""
    import colorsys

    cues = synthetic.CUE_COLORS[: synthetic.NUM_CLASSES - 1]
    hues = np.array([colorsys.rgb_to_hsv(*(np.array(c) / 255.0))[0] for c in cues])
    for k, hue in enumerate(hues):
        for shift in np.linspace(-0.1, 0.1, 9):
            d = np.abs((hue + shift - hues + 0.5) % 1.0 - 0.5)
            assert int(np.argmin(d)) == k


def test_training_pipeline_keeps_the_cue_in_every_crop():
    import tensorflow as tf

    images, labels = data.synthetic_arrays(8)
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    info = data.dataset_info("synthetic")
    assert info.ratio_range == (0.5, 1.0)
    pipeline = data.make_pipeline(ds, training=True, crop_size=info.crop_size, batch_size=8,
                                  seed=0, name="synthetic", photometric=False, shuffle_buffer=0,
                                  num_classes=info.num_classes)
    out_images, out_labels = (t.numpy() for t in next(iter(pipeline)))
    assert out_images.shape == (8, 64, 64, 3)
    saturation = out_images.max(-1) - out_images.min(-1)
    assert (saturation.reshape(8, -1).max(1) > 150).all(), "the cue must stay visible"
    for label, original in zip(out_labels, labels):
        assert set(np.unique(label)) - {255} == set(np.unique(original))


def test_tfds_dtype_deprecation_warning_is_dropped(caplog):
    """tfds logs "`FeatureConnector.dtype` is deprecated" from its own decoder of our
    byte-encoded features; keras_segattn.data drops exactly that message."""
    import logging

    absl = logging.getLogger("absl")
    with caplog.at_level(logging.WARNING):
        absl.warning("`FeatureConnector.dtype` is deprecated. Please change your code to use "
                     "NumPy with the field `FeatureConnector.np_dtype`")
        absl.warning("another absl warning")
    assert [r.getMessage() for r in caplog.records] == ["another absl warning"]

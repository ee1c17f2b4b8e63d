"""make_pipeline / validate_labels, and a fit on the pipeline under the current backend."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_segattn import data, validation


def toy_dataset(n=5, h=20, w=30, num_classes=4, as_tuple=False):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8)
    labels = rng.integers(0, num_classes, (n, h, w)).astype(np.uint8)
    if as_tuple:
        return tf.data.Dataset.from_tensor_slices((images, labels))
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})


def variable_size_dataset():
    def gen():
        for h, w in [(10, 12), (14, 9), (8, 8)]:
            yield {"image": np.full((h, w, 3), 7, np.uint8), "label": np.ones((h, w), np.uint8)}

    spec = {"image": tf.TensorSpec((None, None, 3), tf.uint8), "label": tf.TensorSpec((None, None), tf.uint8)}
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


class TestTrainingPipeline:
    def test_shapes_dtypes_and_drop_remainder(self):
        ds = data.make_pipeline(toy_dataset(), training=True, crop_size=(16, 24), batch_size=2,
                                seed=0, num_classes=4)
        assert ds.element_spec[0].shape.as_list() == [2, 16, 24, 3]
        assert ds.element_spec[1].shape.as_list() == [2, 16, 24]
        batches = list(ds.as_numpy_iterator())
        assert len(batches) == 2  # 5 examples, batch 2, drop_remainder=True
        images, labels = batches[0]
        assert images.dtype == np.float32 and labels.dtype == np.int32
        assert images.min() >= 0 and images.max() <= 255
        assert set(np.unique(labels)) <= {0, 1, 2, 3, 255}

    def test_keep_remainder_and_tuple_input(self):
        ds = data.make_pipeline(toy_dataset(as_tuple=True), training=True, crop_size=8,
                                batch_size=2, seed=0, drop_remainder=False, cache=True)
        assert [b[0].shape[0] for b in ds.as_numpy_iterator()] == [2, 2, 1]

    def test_deterministic_with_seed_and_new_augmentation_each_epoch(self):
        def make(seed):
            return data.make_pipeline(toy_dataset(), training=True, crop_size=16, batch_size=5,
                                      seed=seed, drop_remainder=False)

        ds = make(1)
        epoch1, epoch2 = next(iter(ds)), next(iter(ds))
        again = next(iter(make(1)))
        np.testing.assert_array_equal(epoch1[0].numpy(), again[0].numpy())
        np.testing.assert_array_equal(epoch1[1].numpy(), again[1].numpy())
        assert not np.array_equal(epoch1[0].numpy(), epoch2[0].numpy())

    @pytest.mark.parametrize("start", [1, 3, 7])
    def test_start_batch_continues_the_same_stream(self, start):
        """An endless pipeline is a pure function of the batch index: starting at batch N
        gives exactly the batches N, N+1, ... of the pipeline started at 0 (same examples,
        same augmentation draws), across epoch boundaries (5 examples, batch 2)."""
        def make(start_batch):
            return data.make_pipeline(toy_dataset(), training=True, crop_size=(12, 16),
                                      batch_size=2, seed=3, repeat=True, cache=True,
                                      start_batch=start_batch)

        full = [b for b in make(0).take(start + 4).as_numpy_iterator()]
        resumed = [b for b in make(start).take(4).as_numpy_iterator()]
        for a, b in zip(full[start:], resumed):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        # Each epoch has its own order, and augmentation draws differ between batches.
        assert not np.array_equal(full[0][0], full[1][0])

    def test_each_epoch_holds_every_example_once(self):
        ids = tf.data.Dataset.from_tensor_slices(
            {"image": np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8),
             "label": np.zeros((6, 2, 2), np.uint8)})
        ds = data.make_pipeline(ids, training=True, crop_size=2, batch_size=3, seed=0,
                                repeat=True, ratio_range=(1.0, 1.0), photometric=False,
                                flip_prob=0.0, start_batch=1)
        seen = [int(b[0][i, 0, 0, 0]) for b in ds.take(4).as_numpy_iterator() for i in range(3)]
        # batches 1..4 = the second half of epoch 0, all of epoch 1, the first half of epoch 2
        assert sorted(seen[3:9]) == list(range(6))
        assert seen[3:9] != list(range(6))

    def test_start_batch_errors(self):
        with pytest.raises(ValueError, match="start_batch needs an endless training pipeline"):
            data.make_pipeline(toy_dataset(), training=True, crop_size=8, seed=0, start_batch=2)
        with pytest.raises(ValueError, match="start_batch needs a seed"):
            data.make_pipeline(toy_dataset(), training=True, crop_size=8, repeat=True,
                               start_batch=2)
        with pytest.raises(ValueError, match="start_batch must be an integer >= 0; got -1"):
            data.make_pipeline(toy_dataset(), training=True, crop_size=8, start_batch=-1)

    def test_repeat(self):
        ds = data.make_pipeline(toy_dataset(), training=True, crop_size=8, batch_size=2,
                                seed=0, repeat=True)
        assert len(list(ds.take(7))) == 7

    def test_argument_errors(self):
        with pytest.raises(ValueError, match="crop_size"):
            data.make_pipeline(toy_dataset(), training=True)
        with pytest.raises(TypeError, match="tf.data.Dataset"):
            data.make_pipeline([1, 2], training=False)
        with pytest.raises(ValueError, match="'image'"):
            data.make_pipeline(tf.data.Dataset.from_tensors({"x": [1]}), training=False)
        with pytest.raises(ValueError, match="unbatched"):
            data.make_pipeline(toy_dataset().batch(2), training=False)

    @pytest.mark.parametrize("option, value, message", [
        ("ratio_range", (2.0, 0.5), "ratio_range must be (low, high) with 0 < low <= high; "
                                    "got (2.0, 0.5)."),
        ("ratio_range", (float("nan"), 2.0), "ratio_range must be (low, high) with 0 < low <= "
                                             "high; got (nan, 2.0)."),
        ("ratio_range", (0.0, 1.0), "ratio_range must be (low, high) with 0 < low <= high; "
                                    "got (0.0, 1.0)."),
        ("ratio_range", 1.5, "ratio_range must be (low, high) with 0 < low <= high; got 1.5."),
        ("cat_max_ratio", 0.0, "cat_max_ratio must be in (0, 1] (1: no limit); got 0.0."),
        ("flip_prob", 2.0, "flip_prob must be in [0, 1]; got 2.0."),
    ])
    def test_augmentation_errors(self, option, value, message):
        """Accepted before: a reversed or NaN range fed tf.random.uniform as it was."""
        with pytest.raises(ValueError) as info:
            data.make_pipeline(toy_dataset(), training=True, crop_size=16, batch_size=2,
                               **{option: value})
        assert str(info.value) == f"make_pipeline: {message}"
        data.make_pipeline(toy_dataset(), training=False, batch_size=2, **{option: value})


class TestEvalPipeline:
    def test_full_size_padded_batches(self):
        ds = data.make_pipeline(variable_size_dataset(), training=False, batch_size=2)
        batches = list(ds.as_numpy_iterator())
        assert [b[0].shape for b in batches] == [(2, 14, 12, 3), (1, 8, 8, 3)]
        images, labels = batches[0]
        assert (labels[0, 10:] == 255).all() and (labels[1, :, 9:] == 255).all()
        assert (images[0, 10:] == 0).all() and (labels[0, :10, :12] == 1).all()

    def test_pad_to_fixed_size(self):
        ds = data.make_pipeline(variable_size_dataset(), training=False, batch_size=3,
                                eval_pad_size=(16, 16))
        assert ds.element_spec[0].shape.as_list() == [None, 16, 16, 3]
        images, labels = next(iter(ds))
        assert (labels.numpy() != 255).sum() == 10 * 12 + 14 * 9 + 8 * 8

    def test_pad_too_small_is_a_clear_error(self):
        ds = data.make_pipeline(variable_size_dataset(), training=False, batch_size=1,
                                eval_pad_size=(9, 9), name="toyset")
        with pytest.raises(tf.errors.InvalidArgumentError, match="toyset.*eval_pad_size"):
            list(ds)

    def test_eval_scale_keeps_ratio(self):
        ds = data.make_pipeline(toy_dataset(n=1), training=False, batch_size=1, eval_scale=(60, 10))
        images, labels = next(iter(ds))
        assert images.shape == (1, 10, 15, 3) and labels.shape == (1, 10, 15)


class TestLabelValidation:
    def bad_dataset(self):
        label = np.zeros((6, 6), np.uint8)
        label[0, 0], label[1, 1], label[2, 2] = 7, 9, 255
        return tf.data.Dataset.from_tensors({"image": np.zeros((6, 6, 3), np.uint8), "label": label})

    def test_in_graph_error_is_one_line_naming_value_and_example(self):
        ds = data.make_pipeline(self.bad_dataset(), training=False, batch_size=1,
                                num_classes=5, name="my_set")
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            list(ds)
        assert validation.check_message(info.value) == (
            "label 7 in example 0 of dataset my_set is outside [0, 5) and is not the ignore "
            "index 255")
        with pytest.raises(ValueError) as info:
            with validation.one_line_errors():
                list(ds)
        assert str(info.value) == (
            "label 7 in example 0 of dataset my_set is outside [0, 5) and is not the ignore "
            "index 255")

    def test_error_names_the_example(self):
        labels = np.zeros((5, 4, 4), np.uint8)
        labels[3, 1, 2] = 9
        ds = tf.data.Dataset.from_tensor_slices((np.zeros((5, 4, 4, 3), np.uint8), labels))
        pipeline = data.make_pipeline(ds, training=True, crop_size=4, batch_size=1, seed=0,
                                      shuffle_buffer=1, num_classes=3, name="toy")
        with pytest.raises(ValueError, match=r"^label 9 in example 3 of dataset toy is outside "
                                             r"\[0, 3\) and is not the ignore index 255$"):
            with validation.one_line_errors():
                list(pipeline)

    @pytest.mark.parametrize("value", [2.0, 0.5])
    def test_float_labels_are_refused_at_once(self, value):
        ds = tf.data.Dataset.from_tensors((np.zeros((4, 4, 3), np.uint8),
                                           np.full((4, 4), value, np.float32)))
        with pytest.raises(ValueError) as info:
            data.make_pipeline(ds, training=False, num_classes=3, name="toy")
        assert str(info.value) == (
            f"label {value} in example 0 of dataset toy is a float32 value; class indices must "
            "be integers 0..K-1 (or the ignore index 255): cast whole-number labels to int32 "
            "and map fractional ones to classes first")

    @pytest.mark.parametrize("bad, counts", [(np.nan, "2 NaN and 0 Inf"), (np.inf, "0 NaN and 2 Inf")])
    def test_nan_or_inf_images_are_refused(self, bad, counts):
        images = np.zeros((3, 4, 4, 3), np.float32)
        images[2, 0, :2, 0] = bad
        ds = tf.data.Dataset.from_tensor_slices((images, np.zeros((3, 4, 4), np.uint8)))
        with pytest.raises(ValueError) as info:
            with validation.one_line_errors():
                list(data.make_pipeline(ds, training=False, batch_size=2, name="toy"))
        assert str(info.value) == (
            f"images in example 2 of dataset toy contain {counts} values (of 48); they must "
            "be finite RGB values in [0, 255]")

    def test_validate_labels_helper(self):
        with pytest.raises(ValueError) as info:
            data.validate_labels(self.bad_dataset(), num_classes=5, name="my_set")
        assert str(info.value) == (
            "label 7 in element 0 of dataset my_set is outside [0, 5) and is not the ignore "
            "index 255 (bad values [7, 9] in 1 element(s): [0])")
        assert data.validate_labels(self.bad_dataset(), num_classes=10) == 1
        batched = toy_dataset().batch(2).map(lambda ex: (ex["image"], ex["label"]))
        assert data.validate_labels(batched, num_classes=4) == 3

    def test_valid_labels_pass(self):
        ds = data.make_pipeline(self.bad_dataset(), training=False, batch_size=1, num_classes=10)
        assert len(list(ds)) == 1


def test_fit_on_pipeline_under_current_backend():
    """tf.data is the backend-neutral input path: one fit step on TF, JAX or torch."""
    ds = data.make_pipeline(toy_dataset(n=4), training=True, crop_size=16, batch_size=2, seed=0,
                            num_classes=4)
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(4, 1)(keras.layers.Rescaling(1 / 255.0)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])

"""make_pipeline / validate_labels, and a fit on the pipeline under the current backend."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_segattn import data


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

    def test_in_graph_error_names_dataset_and_values(self):
        ds = data.make_pipeline(self.bad_dataset(), training=False, batch_size=1,
                                num_classes=5, name="my_set")
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            list(ds)
        message = str(info.value)
        assert "dataset my_set " in message and "[0, 5)" in message
        assert "[7 9]" in message

    def test_validate_labels_helper(self):
        with pytest.raises(ValueError, match=r"dataset my_set.*\[7, 9\]"):
            data.validate_labels(self.bad_dataset(), num_classes=5, name="my_set")
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

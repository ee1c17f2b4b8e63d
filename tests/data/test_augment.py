"""Joint image/label augmentation (keras_segattn.data.augment)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_segattn.data import augment


def coordinate_example(h=30, w=40):
    """Image channels encode (y, x); channel 2 is 1 everywhere (0 only in padding);
    the label is a deterministic function of (y, x)."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([yy, xx, np.ones_like(yy)], -1).astype(np.uint8)
    label = ((yy * 7 + xx * 3) % 19).astype(np.uint8)
    return image, label


def expected_label(image):
    y, x = image[..., 0].astype(int), image[..., 1].astype(int)
    return (y * 7 + x * 3) % 19


def seed(i):
    return tf.constant([i, 17], tf.int64)


class TestCropAndPad:
    def test_crop_keeps_alignment_and_static_shape(self):
        image, label = coordinate_example()
        fn = tf.function(lambda im, lb, s: augment.random_crop(im, lb, s, (16, 24)))
        offsets = set()
        for i in range(8):
            im, lb = fn(image, label, seed(i))
            assert im.shape == (16, 24, 3) and lb.shape == (16, 24)
            im, lb = im.numpy(), lb.numpy()
            np.testing.assert_array_equal(lb, expected_label(im))
            offsets.add((im[0, 0, 0], im[0, 0, 1]))
        assert len(offsets) > 1, "crops should be random"

    def test_padding_fills_label_255_and_image_0(self):
        image, label = coordinate_example(10, 12)
        im, lb = augment.random_crop(image, label, seed(0), (16, 20))
        im, lb = im.numpy(), lb.numpy()
        assert im.shape == (16, 20, 3) and lb.shape == (16, 20)
        pad = np.ones((16, 20), bool)
        pad[:10, :12] = False  # padding goes bottom/right
        assert (lb[pad] == 255).all() and (im[pad] == 0).all()
        np.testing.assert_array_equal(lb[~pad].reshape(10, 12), label)
        np.testing.assert_array_equal(im[:10, :12], image)

    def test_static_shapes_in_graph_with_unknown_input_size(self):
        spec = (tf.TensorSpec((None, None, 3), tf.uint8), tf.TensorSpec((None, None), tf.uint8),
                tf.TensorSpec((2,), tf.int64))
        fn = tf.function(lambda im, lb, s: augment.train_augment(im, lb, s, (8, 12)),
                         input_signature=spec)
        out = fn.get_concrete_function().structured_outputs
        assert out[0].shape == (8, 12, 3) and out[1].shape == (8, 12)
        assert out[0].dtype == tf.float32 and out[1].dtype == tf.int32

    def test_cat_max_ratio_rejects_unbalanced_crops(self):
        # 8x8 crops of an 8x16 map, class 0 left / class 1 right: 3 of the 9 offsets give
        # a crop whose largest class is < 75 %. mmseg semantics: up to 10 tries.
        label = np.zeros((8, 16), np.uint8)
        label[:, 8:] = 1
        image = np.zeros((8, 16, 3), np.uint8)

        def count_ok(ratio):
            ok = 0
            for i in range(20):
                _, lb = augment.random_crop(image, label, seed(i), (8, 8), cat_max_ratio=ratio)
                values, counts = np.unique(lb.numpy(), return_counts=True)
                ok += len(values) == 2 and counts.max() / counts.sum() < 0.75
            return ok

        assert count_ok(0.75) >= 17
        assert count_ok(1.0) <= 14

    def test_eval_pad_to_size(self):
        image, label = coordinate_example(5, 7)
        im, lb = augment.pad_to_size(image, label, (8, 8))
        assert im.shape == (8, 8, 3) and (lb.numpy()[5:] == 255).all() and (lb.numpy()[:, 7:] == 255).all()


class TestFlipRescalePhotometric:
    def test_flip_consistency(self):
        image, label = coordinate_example()
        flipped = 0
        for i in range(10):
            im, lb = augment.random_flip(image, label, seed(i))
            im, lb = im.numpy(), lb.numpy()
            np.testing.assert_array_equal(lb, expected_label(im))
            if im[0, 0, 1] == 39:
                flipped += 1
                np.testing.assert_array_equal(lb, label[:, ::-1])
        assert 0 < flipped < 10

    def test_rescale_sizes_and_label_values(self):
        image, label = coordinate_example(30, 40)
        im, lb = augment.rescale_keep_ratio(image, label, (2048, 512))
        # mmseg rescale_size: factor = min(2048 / 40, 512 / 30) = 17.07 -> (512, 683)
        assert tuple(im.shape) == (512, 683, 3) and tuple(lb.shape) == (512, 683)
        assert set(np.unique(lb.numpy())) <= set(np.unique(label))  # nearest: no new values
        sizes = set()
        for i in range(10):
            im, lb = augment.random_rescale(image, label, seed(i), ratio_range=(0.5, 2.0))
            h, w = im.shape[:2]
            assert lb.shape == (h, w) and 15 <= h <= 60 and abs(w / h - 4 / 3) < 0.1
            sizes.add(h)
        assert len(sizes) > 3

    def test_integer_upscale_keeps_alignment(self):
        image, label = coordinate_example(6, 8)
        im, lb = augment.resize(image, label, (12, 16))
        np.testing.assert_array_equal(lb.numpy()[::2, ::2], label)

    def test_photometric_distortion_range_and_determinism(self):
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
        outs = [augment.photometric_distortion(image, seed(i)).numpy() for i in range(6)]
        for out in outs:
            assert out.dtype == np.float32 and out.shape == (16, 16, 3)
            assert out.min() >= 0 and out.max() <= 255
        np.testing.assert_array_equal(outs[0], augment.photometric_distortion(image, seed(0)).numpy())
        assert any(not np.allclose(o, image, atol=1) for o in outs)

    def test_train_augment_label_values_subset(self):
        image, label = coordinate_example()
        for i in range(5):
            im, lb = augment.train_augment(image, label, seed(i), (24, 24), cat_max_ratio=0.75)
            assert im.shape == (24, 24, 3) and lb.shape == (24, 24)
            assert set(np.unique(lb.numpy())) <= set(range(19)) | {255}


@pytest.mark.parametrize("label_shape", [(10, 12), (10, 12, 1)])
def test_label_with_channel_axis(label_shape):
    image = np.zeros((10, 12, 3), np.uint8)
    label = np.zeros(label_shape, np.uint8)
    _, lb = augment.random_crop(image, label, seed(0), (8, 8))
    assert lb.shape == (8, 8)

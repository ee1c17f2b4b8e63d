"""keras_segattn.metrics: the same confusion matrix as Keras' MeanIoU, on every backend, eager
and inside a compiled model."""

import keras
import numpy as np
import pytest

from keras_segattn import evaluation, losses, metrics


def labels_and_logits(seed=0, num_classes=6, shape=(3, 11, 13)):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=shape)
    labels[rng.random(shape) < 0.2] = 255
    labels[0, 0, :3] = [-1, num_classes, 99]  # out of range: dropped, as Keras does
    logits = rng.normal(size=(*shape, num_classes)).astype("float32")
    return labels, logits


class TestMeanIoU:
    @pytest.mark.parametrize("weighted", [False, True])
    def test_same_matrix_as_keras_mean_iou(self, weighted):
        labels, logits = labels_and_logits()
        weights = None
        if weighted:  # integer weights: Keras' default int matrix would truncate floats
            weights = np.random.default_rng(1).integers(0, 4, size=labels.shape)
        ours = metrics.MeanIoU(6, ignore_class=255, sparse_y_pred=False)
        theirs = keras.metrics.MeanIoU(6, ignore_class=255, sparse_y_pred=False)
        for metric in (ours, theirs):
            metric.update_state(labels, logits, sample_weight=weights)
            metric.update_state(labels[:1], logits[:1], sample_weight=None if weights is None
                                else weights[:1])
        got = keras.ops.convert_to_numpy(ours.total_cm)
        want = keras.ops.convert_to_numpy(theirs.total_cm)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        assert got.sum() > 0
        np.testing.assert_allclose(float(ours.result()), float(theirs.result()), rtol=1e-6)

    def test_matches_numpy_confusion_matrix_and_ignores_255(self):
        labels, logits = labels_and_logits(seed=2)
        ours = metrics.MeanIoU(6, ignore_class=255, sparse_y_pred=False)
        ours.update_state(labels, logits)
        keep = (labels >= 0) & (labels < 6)
        expected = evaluation.ConfusionMatrix(6)
        expected.update(np.where(keep, labels, 255), logits.argmax(-1))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours.total_cm),
                                      expected.matrix)

    def test_inside_fit_and_evaluate(self):
        labels, _ = labels_and_logits(seed=3, num_classes=3, shape=(4, 8, 8))
        labels[labels > 2] = 255  # in-range labels only: the loss rejects the others
        labels[labels < 0] = 255
        images = np.random.default_rng(4).normal(size=(4, 8, 8, 3)).astype("float32")
        model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1)])
        model.compile(optimizer="sgd",  # jit_compile="auto": XLA on TensorFlow, jit on JAX
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                      ignore_class=255),
                      metrics=metrics.segmentation_metrics(3))
        model.fit(images, labels, batch_size=2, epochs=1, verbose=0)
        scores = model.evaluate(images, labels, batch_size=2, verbose=0, return_dict=True)
        predictions = model.predict(images, verbose=0).argmax(-1)
        expected = evaluation.ConfusionMatrix(3)
        expected.update(labels, predictions)
        want = expected.result()
        for name in ("mIoU", "mAcc", "aAcc"):
            np.testing.assert_allclose(scores[name], want[name], rtol=1e-5)

    def test_serialization(self):
        metric = metrics.MeanIoU(4, ignore_class=255, sparse_y_pred=False, name="miou")
        revived = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(metric))
        assert type(revived) is metrics.MeanIoU
        assert revived.get_config() == metric.get_config()


def test_class_presence_matches_numpy():
    labels, _ = labels_and_logits(seed=5, num_classes=7, shape=(4, 9, 10))
    labels[2] = 255  # an image with no labelled pixel: nothing present
    got = keras.ops.convert_to_numpy(losses.class_presence(labels, 7))
    want = np.array([[np.any(image == k) for k in range(7)] for image in labels], "float32")
    np.testing.assert_array_equal(got, want)
    assert not got[2].any()

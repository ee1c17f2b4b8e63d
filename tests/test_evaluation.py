import keras
import numpy as np
import pytest

from keras_segattn import evaluation


def reference_metrics(labels_list, preds_list, num_classes, ignore_index=255):
    """Independent re-implementation of mmseg IoUMetric (intersect/union/pred/label areas
    summed over images, nanmean over classes)."""
    totals = np.zeros((4, num_classes))
    for labels, preds in zip(labels_list, preds_list):
        mask = labels != ignore_index
        labels, preds = labels[mask], preds[mask]
        intersect = preds[preds == labels]
        a_i = np.histogram(intersect, bins=num_classes, range=(0, num_classes - 1))[0]
        a_p = np.histogram(preds, bins=num_classes, range=(0, num_classes - 1))[0]
        a_l = np.histogram(labels, bins=num_classes, range=(0, num_classes - 1))[0]
        totals += [a_i, a_p + a_l - a_i, a_p, a_l]
    a_i, a_u, _, a_l = totals
    with np.errstate(invalid="ignore", divide="ignore"):
        iou, acc = a_i / a_u, a_i / a_l
    return {"aAcc": a_i.sum() / a_l.sum(), "mIoU": np.nanmean(iou), "mAcc": np.nanmean(acc),
            "IoU": iou, "Acc": acc}


def random_batches(seed=0, num_classes=5, batches=4):
    rng = np.random.default_rng(seed)
    labels, preds = [], []
    for _ in range(batches):
        lab = rng.integers(0, num_classes - 1, size=(2, 9, 7))  # last class never labelled
        lab[rng.random(lab.shape) < 0.2] = 255
        pred = np.where(rng.random(lab.shape) < 0.6, np.clip(lab, 0, num_classes - 1),
                        rng.integers(0, num_classes, size=lab.shape))
        labels.append(lab)
        preds.append(pred)
    return labels, preds


class TestConfusionMatrix:
    def test_matches_independent_mmseg_calculation(self):
        labels, preds = random_batches()
        cm = evaluation.ConfusionMatrix(5)
        for lab, pred in zip(labels, preds):
            cm.update(lab, pred)
        got, want = cm.result(), reference_metrics(labels, preds, 5)
        for key in ("aAcc", "mIoU", "mAcc"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-12)
        np.testing.assert_allclose(got["IoU"], want["IoU"], rtol=1e-12)
        np.testing.assert_allclose(got["Acc"], want["Acc"], rtol=1e-12)  # NaN for class 4
        assert np.isnan(got["Acc"][4])

    def test_logits_are_argmaxed_and_channel_dim_squeezed(self):
        labels, preds = random_batches(1, batches=1)
        logits = np.eye(5)[preds[0]] * 3.0
        a, b = evaluation.ConfusionMatrix(5), evaluation.ConfusionMatrix(5)
        a.update(labels[0][..., None], logits)
        b.update(labels[0], preds[0])
        np.testing.assert_array_equal(a.matrix, b.matrix)

    def test_matches_keras_metrics(self):
        labels, preds = random_batches(2)
        cm = evaluation.ConfusionMatrix(5)
        miou = keras.metrics.MeanIoU(5, ignore_class=255, sparse_y_pred=False)
        macc = evaluation.MeanAccuracy(5)
        aacc = evaluation.PixelAccuracy(5)
        for lab, pred in zip(labels, preds):
            cm.update(lab, pred)
            logits = np.eye(5, dtype="float32")[pred]
            for m in (miou, macc, aacc):
                m.update_state(lab, logits)
        got = cm.result()
        np.testing.assert_allclose(float(miou.result()), got["mIoU"], rtol=1e-5)
        np.testing.assert_allclose(float(macc.result()), got["mAcc"], rtol=1e-5)
        np.testing.assert_allclose(float(aacc.result()), got["aAcc"], rtol=1e-5)

    def test_metric_config_round_trip(self):
        m = evaluation.MeanAccuracy(7)
        clone = evaluation.MeanAccuracy.from_config(m.get_config())
        assert clone.num_classes == 7 and clone.ignore_class == 255 and clone.name == "mAcc"

    def test_bad_labels_raise_clear_error(self):
        cm = evaluation.ConfusionMatrix(3)
        with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
            cm.update(np.array([0, 7]), np.array([0, 1]))
        with pytest.raises(ValueError, match="positive integer"):
            evaluation.ConfusionMatrix(0)

    def test_table(self):
        cm = evaluation.ConfusionMatrix(2)
        cm.update([0, 0, 1, 1], [0, 1, 1, 1])
        r = cm.result()
        text = evaluation.format_table(r["IoU"], r["Acc"], ["road", "sky"])
        assert "road" in text and "50.00" in text and "66.67" in text and "100.00" in text


def tiny_model(num_classes=3, dict_output=False):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(num_classes, 1)(inputs)
    outputs = {"logits": x, "aux": x} if dict_output else x
    return keras.Model(inputs, outputs)


class TestEvaluate:
    def test_whole_matches_manual_and_partial_batch(self):
        rng = np.random.default_rng(0)
        images = rng.normal(size=(5, 8, 8, 3)).astype("float32")
        labels = rng.integers(0, 3, size=(5, 8, 8))
        labels[:, 0] = 255
        model = tiny_model(dict_output=True)
        batches = [(images[:2], labels[:2]), (images[2:4], labels[2:4]),
                   {"images": images[4:], "segmentation_masks": labels[4:, ..., None]}]
        result = evaluation.evaluate(model, batches, 3, class_names=["a", "b", "c"])
        preds = np.argmax(keras.ops.convert_to_numpy(model(images)["logits"]), -1)
        want = reference_metrics([labels], [preds], 3)
        np.testing.assert_allclose(result["mIoU"], want["mIoU"], rtol=1e-9)
        np.testing.assert_allclose(result["aAcc"], want["aAcc"], rtol=1e-9)
        assert result["num_images"] == 5
        assert "mIoU:" in str(result) and "| a " in str(result)

    def test_low_resolution_logits_are_resized(self):
        inputs = keras.Input((8, 8, 3))
        outputs = keras.layers.Conv2D(3, 1, strides=2)(inputs)
        model = keras.Model(inputs, outputs)
        images = np.ones((2, 8, 8, 3), "float32")
        result = evaluation.evaluate(model, [(images, np.zeros((2, 8, 8), "int32"))], 3)
        assert result["confusion_matrix"].sum() == 2 * 64

    def test_errors(self):
        with pytest.raises(ValueError, match="unknown inference mode"):
            evaluation.evaluate(tiny_model(), [], 3, mode="bogus")
        with pytest.raises(ValueError, match="empty"):
            evaluation.evaluate(tiny_model(), [], 3)


@pytest.mark.two_jax_devices  # skipped unless JAX has 2 devices (tests/conftest.py)
def test_evaluate_under_data_parallel_with_odd_batches():
    """Under JAX DataParallel on 2 devices, batches of 3 and 1 images (padded to 4 and 2,
    sharded, trimmed): whole, slide and multi-scale + flip metrics equal the single-device
    ones (the logits of slide and multi-scale with real rescaling:
    tests/deploy/test_inference.py)."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(4, 12, 14, 3)).astype("float32")
    labels = rng.integers(0, 3, size=(4, 12, 14)).astype("int32")
    batches = [(images[:3], labels[:3]), (images[3:], labels[3:])]

    def conv_model():
        keras.utils.set_random_seed(2)
        inputs = keras.Input((None, None, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        return keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))

    modes = [dict(mode="whole"), dict(mode="slide", crop_size=(8, 8), stride=(6, 6)),
             dict(mode="multiscale", scales=(1.0,), flip=True)]  # rescaling: test_inference.py
    single = conv_model()

    def run(model):
        return [evaluation.evaluate(model, batches, 3, **kw) for kw in modes]

    expected = run(single)
    devices = keras.distribution.list_devices()[:2]
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        model = conv_model()  # built under the distribution: replicated variables
        model.set_weights(single.get_weights())
        got = run(model)
    finally:
        keras.distribution.set_distribution(None)
    for kw, want, result in zip(modes, expected, got):
        np.testing.assert_array_equal(result["confusion_matrix"], want["confusion_matrix"],
                                      err_msg=str(kw))
        assert result["num_images"] == 4
        np.testing.assert_allclose(result["mIoU"], want["mIoU"], rtol=1e-12)

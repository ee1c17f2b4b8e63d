"""Bad labels and images at the model entry points (``fit`` / ``evaluate`` / ``predict`` of
every keras_segattn model): one-line ``ValueError``s naming the value and where it is, on
every backend, instead of a backend error that dumps the label tensor (or silence)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_segattn import models, validation

NUM_CLASSES = 3


def fresh_model():
    keras.utils.set_random_seed(0)
    net = models.get("fcn", num_classes=NUM_CLASSES, backbone="resnet_tiny", channels=8,
                     num_convs=1)
    net.compile(optimizer="adam")  # Keras' default compile, as users run it (jax.jit on JAX)
    return net


@pytest.fixture(scope="module")
def model():
    return fresh_model()


def data(batches=5, batch_size=2, size=16):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batches * batch_size, size, size, 3)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, (batches * batch_size, size, size)).astype("int32")
    labels[0, :2] = 255  # the ignore index is fine
    return images, labels


def one_line(info):
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_labels_out_of_range_in_a_dataset(model):
    images, labels = data()
    labels[7, 3, 4] = 7  # batch 3 (batch size 2)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    with pytest.raises(ValueError) as info:
        model.fit(ds, epochs=1, verbose=0)
    assert one_line(info) == "label 7 at batch 3 is outside [0, 3) and is not the ignore index 255"
    with pytest.raises(ValueError) as info:
        model.evaluate(ds, verbose=0)
    assert one_line(info) == "label 7 at batch 3 is outside [0, 3) and is not the ignore index 255"


def test_a_bad_batch_after_good_ones_loses_no_work():
    """fit keeps the steps of the good batches before the bad one; evaluate and predict
    (failed, or interrupted) leave the model as it was; the model keeps working. (On JAX,
    Keras' evaluate and predict left the variables detached after such an error: "Array has
    been deleted".)"""
    images, labels = data()
    bad_labels = labels.copy()
    bad_labels[7, 3, 4] = 7  # batch 3
    nan_images = images.copy()
    nan_images[5, 0, 0, 0] = np.nan  # batch 2
    net = fresh_model()
    net.fit(images[:2], labels[:2], batch_size=2, epochs=1, verbose=0)  # builds the optimizer
    weights = net.get_weights()
    prediction = net.predict(images, batch_size=2, verbose=0)

    with pytest.raises(ValueError, match="label 7 at batch 3 is outside"):
        net.evaluate(tf.data.Dataset.from_tensor_slices((images, bad_labels)).batch(2),
                     verbose=0)
    with pytest.raises(ValueError, match="images at batch 2 contain 1 NaN"):
        net.predict(tf.data.Dataset.from_tensor_slices(nan_images).batch(2), verbose=0)

    class Interrupt(keras.callbacks.Callback):  # Ctrl-C after batch 2
        def on_test_batch_end(self, batch, logs=None):
            if batch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        net.evaluate(images, labels, batch_size=2, callbacks=[Interrupt()], verbose=0)
    for before, after in zip(weights, net.get_weights()):
        np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(net.predict(images, batch_size=2, verbose=0), prediction)

    # fit stops at batch 3 with the three steps before it taken, as a run on those 3 batches.
    with pytest.raises(ValueError, match="label 7 at batch 3 is outside"):
        net.fit(tf.data.Dataset.from_tensor_slices((images, bad_labels)).batch(2), epochs=1,
                verbose=0)
    reference = fresh_model()
    reference.fit(images[:2], labels[:2], batch_size=2, epochs=1, verbose=0)
    reference.fit(images[:6], labels[:6], batch_size=2, epochs=1, shuffle=False, verbose=0)
    for ours, expected in zip(net.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    moments = lambda m: [v for v in m.optimizer.variables if v is not m.optimizer.iterations]  # noqa: E731
    for ours, expected in zip(moments(net), moments(reference)):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    assert int(reference.optimizer.iterations) == 4
    # A TensorFlow graph without XLA (Keras' default on a CPU-only machine) runs the failed
    # step's counter increment, which reads no data, before its input read fails: one more.
    tf_graph = keras.backend.backend() == "tensorflow" and not net.jit_compile
    assert int(net.optimizer.iterations) == (5 if tf_graph else 4)
    history = net.fit(images, labels, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_labels_out_of_range_in_arrays(model):
    images, labels = data()
    labels[7, 3, 4] = -1
    with pytest.raises(ValueError) as info:
        model.fit(images, labels, batch_size=2, epochs=1, verbose=0)
    assert one_line(info) == ("label -1 at batch 3 (example 7) is outside [0, 3) and is not the "
                              "ignore index 255")


@pytest.mark.parametrize("value", [2.0, 0.5])
def test_float_labels(model, value):
    images, labels = data()
    floats = labels.astype("float32")
    floats[0, 0, 0] = value
    with pytest.raises(ValueError) as info:
        model.fit(images, floats, batch_size=2, epochs=1, verbose=0)
    shown = value if value != 2.0 else float(floats.reshape(-1)[0])
    assert one_line(info) == (
        f"label {shown} at batch 0 (example 0) is a float32 value; class indices must be "
        "integers 0..K-1 (or the ignore index 255): cast whole-number labels to int32 and map "
        "fractional ones to classes first")
    ds = tf.data.Dataset.from_tensor_slices((images, floats)).batch(2)
    with pytest.raises(ValueError) as info:
        model.fit(ds, epochs=1, verbose=0)
    assert one_line(info) == (
        f"label {shown} at batch 0 is a float32 value; class indices must be integers 0..K-1 "
        "(or the ignore index 255): cast whole-number labels to int32 and map fractional ones "
        "to classes first")


@pytest.mark.parametrize("bad, counts", [(np.nan, "4 NaN and 0 Inf"), (np.inf, "0 NaN and 4 Inf")])
def test_nan_or_inf_images_in_fit(model, bad, counts):
    images, labels = data()
    images[5, 0, :4, 0] = bad  # batch 2
    with pytest.raises(ValueError) as info:
        model.fit(images, labels, batch_size=2, epochs=1, verbose=0)
    assert one_line(info) == (f"images at batch 2 (example 5) contain {counts} values (of 768); "
                              "they must be finite RGB values in [0, 255]")
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    with pytest.raises(ValueError) as info:
        model.fit(ds, epochs=1, verbose=0)
    assert one_line(info) == (f"images at batch 2 contain {counts} values (of 1536); they must "
                              "be finite RGB values in [0, 255]")


def test_predict_on_a_nan_image(model):
    image = np.full((1, 16, 16, 3), np.nan, "float32")
    with pytest.raises(ValueError) as info:
        model.predict(image, verbose=0)
    assert one_line(info) == ("images at batch 0 (example 0) contain 768 NaN and 0 Inf values "
                              "(of 768); they must be finite RGB values in [0, 255]")
    with pytest.raises(ValueError) as info:
        model.predict(tf.data.Dataset.from_tensors(image), verbose=0)
    assert one_line(info) == ("images at batch 0 contain 768 NaN and 0 Inf values (of 768); "
                              "they must be finite RGB values in [0, 255]")


def test_predict_logits_refuses_nan(model):
    from keras_segattn.inference import predict_logits

    image = np.zeros((16, 16, 3), "float32")
    image[3, 3] = np.nan
    with pytest.raises(ValueError) as info:
        predict_logits(model, image)
    assert one_line(info) == ("images in example 0 contain 3 NaN and 0 Inf values (of 768); "
                              "they must be finite RGB values in [0, 255]")


def test_validation_data_is_checked(model):
    images, labels = data()
    bad = labels.copy()
    bad[1, 0, 0] = 3
    with pytest.raises(ValueError) as info:
        model.fit(images, labels, batch_size=2, epochs=1, verbose=0,
                  validation_data=(images, bad))
    assert one_line(info) == ("label 3 at batch 0 (example 1) is outside [0, 3) and is not the "
                              "ignore index 255")


LABEL_SHAPE_HINT = ("one class index per pixel, shape (batch, height, width) or "
                    "(batch, height, width, 1).")


@pytest.mark.parametrize("call,message", [
    # A single image without its batch axis (Keras: a shape error from inside the graph).
    (lambda m, x, y: m.predict(x[0], verbose=0),
     "images must be a batch of shape (batch, height, width, 3); got shape (16, 16, 3): one "
     "image needs a batch axis, images[None]."),
    # A grayscale batch: Keras broadcast it through the RGB normalisation without a word.
    (lambda m, x, y: m.predict(x[..., :1], verbose=0),
     "images have 1 channel (shape (10, 16, 16, 1)); the model takes 3, e.g. "
     "np.repeat(gray, 3, axis=-1)."),
    (lambda m, x, y: m.fit(x, y[:, :8, :8], batch_size=2, verbose=0),
     "labels of shape (10, 8, 8) do not fit images of shape (10, 16, 16, 3): " + LABEL_SHAPE_HINT),
    # One-hot labels.
    (lambda m, x, y: m.evaluate(x, np.eye(3, dtype="int32")[np.minimum(y, 2)], verbose=0),
     "labels of shape (10, 16, 16, 3) do not fit images of shape (10, 16, 16, 3): "
     + LABEL_SHAPE_HINT),
    (lambda m, x, y: m.fit(x, y[:4], verbose=0),
     "labels of shape (4, 16, 16) do not fit images of shape (10, 16, 16, 3): "
     + LABEL_SHAPE_HINT),
    (lambda m, x, y: m.fit(tf.data.Dataset.from_tensor_slices((x, y)), verbose=0),
     "images must be a batch of shape (batch, height, width, 3); got shape (16, 16, 3): batch "
     "the dataset (dataset.batch(n))."),
    (lambda m, x, y: m.fit(tf.data.Dataset.from_tensor_slices((x, y[:, 1:])).batch(2),
                           verbose=0),
     "labels of shape (None, 15, 16) do not fit images of shape (None, 16, 16, 3): "
     + LABEL_SHAPE_HINT),
    # No image at all (Keras: UnboundLocalError 'batch_outputs' from inside predict).
    (lambda m, x, y: m.predict(x[:0], verbose=0),
     "images are an empty batch (shape (0, 16, 16, 3))."),
], ids=["predict-one-image", "predict-gray", "fit-label-size", "evaluate-one-hot",
        "fit-label-count", "dataset-unbatched", "dataset-label-size", "predict-empty"])
def test_wrong_shapes_are_one_line(model, call, message):
    images, labels = data()
    with pytest.raises(ValueError) as info:
        call(model, images, labels)
    assert one_line(info) == message
    # (B, H, W, 1) labels are one class index per pixel too.
    history = model.fit(images, labels[..., None], batch_size=5, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_checked_dataset_passes_good_batches_unchanged():
    images, labels = data()
    sample_weight = np.ones(labels.shape, "float32")
    ds = tf.data.Dataset.from_tensor_slices((images, labels, sample_weight)).batch(3)
    checked = validation.checked_dataset(ds, NUM_CLASSES)
    assert checked.element_spec == ds.element_spec
    for a, b in zip(ds.as_numpy_iterator(), checked.as_numpy_iterator()):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    # make_pipeline's output is checked per example already: not wrapped again.
    from keras_segattn import data as data_lib

    pipeline = data_lib.make_pipeline(ds.unbatch().map(lambda x, y, w: (x, y)), training=False,
                                      num_classes=NUM_CLASSES)
    assert validation.checked_dataset(pipeline, NUM_CLASSES) is pipeline


def test_good_data_trains(model):
    images, labels = data()
    history = model.fit(tf.data.Dataset.from_tensor_slices((images, labels)).batch(2),
                        epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()

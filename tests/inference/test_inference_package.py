"""The ``keras_segattn.inference`` package: its public pieces and their one resize.

(The modes themselves, the predictors and ``predict_files`` are tested end to end in
``tests/deploy/test_inference.py`` and ``tests/deploy/test_export.py``.)
"""

import keras
import numpy as np
import pytest

from keras_segattn import evaluation, inference
from keras_segattn.common import INFERENCE_MODES
from keras_segattn.layers.resize import resize


def _model(num_classes=4):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(num_classes, 3, strides=2, padding="same")(inputs)
    return keras.Model(inputs, {"logits": x, "aux": x * 2.0})


def test_submodules_and_public_names():
    from keras_segattn.inference import batching, images, modes, predictors

    assert inference.predict_logits is modes.predict_logits
    assert inference.forward is batching.forward
    assert inference.load_predictor is predictors.load_predictor
    assert inference.predict_files is images.predict_files
    assert inference.MODES == INFERENCE_MODES == ("whole", "slide", "multiscale")


def test_select_logits():
    main, aux = np.zeros((1, 2, 2, 3)), np.ones((1, 2, 2, 3))
    assert inference.select_logits({"logits": main, "aux": aux}) is main
    assert inference.select_logits({"only": aux}) is aux
    assert inference.select_logits([main, aux]) is main
    assert inference.select_logits(main) is main
    with pytest.raises(ValueError, match=r"without a 'logits' key \(keys \['a', 'b'\]\)"):
        inference.select_logits({"a": main, "b": aux})


def test_resize_logits_is_the_package_resize():
    logits = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype("float32")
    resized = inference.resize_logits(logits, (11, 13))
    expected = keras.ops.convert_to_numpy(resize(keras.ops.convert_to_tensor(logits), (11, 13)))
    assert resized.dtype == np.float32 and resized.shape == (2, 11, 13, 3)
    np.testing.assert_array_equal(resized, expected)
    assert inference.resize_logits(logits, (5, 7)) is logits


def test_forward_and_evaluation_use_the_same_path():
    """``evaluation`` gets its whole-image logits from ``inference.predict_on_batch`` and its
    resize from ``inference.resize_logits``: the same numbers as ``inference.forward``."""
    model = _model()
    images = np.random.default_rng(1).uniform(0, 255, (2, 9, 11, 3)).astype("float32")
    logits = inference.forward(model, images)
    assert logits.shape == (2, 5, 6, 4) and logits.dtype == np.float32
    np.testing.assert_allclose(evaluation._whole_inference(model, images), logits, atol=1e-6)
    predicted = inference.resize_logits(logits, (9, 11)).argmax(-1)
    labels = np.where(np.arange(99).reshape(1, 9, 11) % 3 == 0, predicted, (predicted + 1) % 4)
    result = evaluation.evaluate(model, [(images, labels.astype("int32"))], num_classes=4)
    expected_acc = float((predicted == labels).mean())  # 1/3 of the pixels by construction
    assert 0.3 < expected_acc < 0.4
    assert abs(result["aAcc"] - expected_acc) < 1e-6, (result["aAcc"], expected_acc)


def test_inference_model_of_a_segmenter_has_one_output():
    from keras_segattn import models

    model = models.FCN(3, backbone="resnet_tiny", channels=8, aux_channels=8)
    single = inference.inference_model(model)
    assert len(single.outputs) == 1 and single.outputs[0].shape[-1] == 3

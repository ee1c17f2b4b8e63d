import os
import tempfile

import keras
import numpy as np
import pytest

from keras_segattn.models import SANet, get
from keras_segattn.models.sanet import SANetCategoricalLoss, SANetHead, class_presence
from keras_segattn.testing import TestCase

NUM_CLASSES = 5
OUTPUTS = ["aux", "image_logits", "logits"]
TINY = dict(backbone="resnet_tiny", stage_channels=8, channels=8)


def _data(batch=2, height=33, width=41):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, height, width, 3)).astype("float32")
    masks = rng.integers(0, NUM_CLASSES - 1, (batch, height, width)).astype("int32")
    masks[:, :3] = 255
    return images, masks


class TestSANet(TestCase):
    def test_categorical_loss(self):
        masks = np.array([[[0, 2], [255, 2]], [[4, 4], [255, 255]]], "int32")
        presence = keras.ops.convert_to_numpy(class_presence(masks[..., None], 5))
        np.testing.assert_array_equal(presence, [[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]])
        logits = np.array([[2.0, -1.0, 0.5, 0.0, -3.0], [0.0, 1.0, -2.0, 0.3, 1.5]], "float32")
        target = presence
        expected = np.mean(np.maximum(logits, 0) - logits * target
                           + np.log1p(np.exp(-np.abs(logits))), axis=-1).mean()
        loss = SANetCategoricalLoss(5)
        self.assertAllClose(loss(masks, logits), expected, atol=1e-6, rtol=1e-5)
        revived = SANetCategoricalLoss.from_config(loss.get_config())
        assert revived.num_classes == 5 and revived.ignore_class == 255

    def test_head(self):
        layer = SANetHead(3, stage_channels=4, channels=4, activation="leaky_relu")
        feats = [np.random.rand(1, s, s + 1, c).astype("float32")
                 for s, c in ((9, 4), (5, 6), (5, 6), (5, 8))]
        logits, image_logits = layer(feats)
        assert tuple(logits.shape) == (1, 9, 10, 3) and tuple(image_logits.shape) == (1, 3)
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(revived) is SANetHead and revived.get_config() == layer.get_config()

    def test_outputs_fit_and_save(self):
        images, masks = _data()
        model = SANet(NUM_CLASSES, **TINY)
        assert model.segmentation_output_names == OUTPUTS
        assert model.default_loss_weights == {"logits": 1.0, "aux": 0.8, "image_logits": 0.2}
        outputs = model(images)
        for name in OUTPUTS:
            expected_shape = (2, NUM_CLASSES) if name == "image_logits" else (2, 33, 41, NUM_CLASSES)
            assert tuple(outputs[name].shape) == expected_shape
            assert keras.backend.standardize_dtype(outputs[name].dtype) == "float32"
        model.compile(steps=10)
        history = model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
        for name in ["loss"] + [f"{name}_loss" for name in OUTPUTS]:
            assert np.isfinite(history.history[name][-1]), name
        expected = model(images[:1], training=False)
        with tempfile.TemporaryDirectory() as tmp:
            model.save(os.path.join(tmp, "model.keras"))
            restored = keras.models.load_model(os.path.join(tmp, "model.keras"))
        assert type(restored) is SANet and restored.get_config() == model.get_config()
        self.assertAllClose(restored(images[:1], training=False), expected, atol=1e-5, rtol=1e-5)
        self.assertAllClose(restored.predict(images[:1], verbose=0), expected["logits"],
                            atol=1e-5, rtol=1e-5)

    def test_mixed_precision_and_registry(self):
        keras.config.set_dtype_policy("mixed_float16")
        model = get("sanet", num_classes=NUM_CLASSES, aux_head=False, categorical_loss=False,
                    activation="leaky_relu", **TINY)
        assert isinstance(model, SANet) and model.segmentation_output_names == ["logits"]
        logits = keras.ops.convert_to_numpy(model(_data(1, 35, 29)[0])["logits"])
        assert logits.shape == (1, 35, 29, NUM_CLASSES) and logits.dtype == np.float32
        assert np.all(np.isfinite(logits))

    @pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(num_classes=2.5),
                                        dict(num_classes=3, activation="gelu")])
    def test_invalid_arguments(self, kwargs):
        with pytest.raises(ValueError):
            SANet(backbone="resnet_tiny", **kwargs)

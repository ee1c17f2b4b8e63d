import os
import tempfile

import keras
import numpy as np
import pytest

from keras_segattn.models import EANet, get
from keras_segattn.models.eanet import EANetHead
from keras_segattn.testing import TestCase

NUM_CLASSES = 5
OUTPUTS = ["aux", "logits"]
TINY = dict(backbone="resnet_tiny", channels=16, key_channels=8, value_channels=8, num_heads=2)


def _data(batch=2, height=33, width=41):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, height, width, 3)).astype("float32")
    masks = rng.integers(0, NUM_CLASSES, (batch, height, width)).astype("int32")
    masks[:, :3] = 255
    return images, masks


class TestEANet(TestCase):
    def test_head(self):
        layer = EANetHead(3, channels=8, key_channels=4, value_channels=8, num_heads=2,
                          activation="leaky_relu")
        assert tuple(layer(np.random.rand(2, 5, 4, 12).astype("float32")).shape) == (2, 5, 4, 3)
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(revived) is EANetHead and revived.get_config() == layer.get_config()
        with pytest.raises(ValueError, match="num_heads"):
            EANetHead(3, key_channels=6, num_heads=4)

    def test_outputs_fit_and_save(self):
        images, masks = _data()
        model = EANet(NUM_CLASSES, **TINY)
        assert model.segmentation_output_names == OUTPUTS
        assert model.default_loss_weights == {"logits": 1.0, "aux": 0.4}
        outputs = model(images)
        for name in OUTPUTS:
            assert tuple(outputs[name].shape) == (2, 33, 41, NUM_CLASSES)
            assert keras.backend.standardize_dtype(outputs[name].dtype) == "float32"
        model.compile(steps=10)
        history = model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
        for name in ["loss"] + [f"{name}_loss" for name in OUTPUTS]:
            assert np.isfinite(history.history[name][-1]), name
        expected = model(images[:1], training=False)
        with tempfile.TemporaryDirectory() as tmp:
            model.save(os.path.join(tmp, "model.keras"))
            restored = keras.models.load_model(os.path.join(tmp, "model.keras"))
        assert type(restored) is EANet and restored.get_config() == model.get_config()
        self.assertAllClose(restored(images[:1], training=False), expected, atol=1e-5, rtol=1e-5)
        self.assertAllClose(restored.predict(images[:1], verbose=0), expected["logits"],
                            atol=1e-5, rtol=1e-5)

    def test_mixed_precision_and_registry(self):
        keras.config.set_dtype_policy("mixed_float16")
        model = get("eanet", num_classes=NUM_CLASSES, aux_head=False, activation="leaky_relu",
                    **TINY)
        assert isinstance(model, EANet) and model.segmentation_output_names == ["logits"]
        logits = keras.ops.convert_to_numpy(model(_data(1, 35, 29)[0])["logits"])
        assert logits.shape == (1, 35, 29, NUM_CLASSES) and logits.dtype == np.float32
        assert np.all(np.isfinite(logits))

    @pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(num_classes=2.5),
                                        dict(num_classes=3, activation="gelu")])
    def test_invalid_arguments(self, kwargs):
        with pytest.raises(ValueError):
            EANet(backbone="resnet_tiny", **kwargs)

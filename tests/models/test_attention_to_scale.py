import os
import tempfile

import keras
import numpy as np
import pytest

from keras_segattn.models import AttentionToScale, get
from keras_segattn.models.attention_to_scale import AttentionToScaleHead, scale_output_name
from keras_segattn.testing import TestCase

NUM_CLASSES = 5
OUTPUTS = ["logits", "scale_050", "scale_075", "scale_100"]
TINY = dict(backbone="resnet_tiny", channels=8, attention_channels=8)


def _data(batch=2, height=33, width=41):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, height, width, 3)).astype("float32")
    masks = rng.integers(0, NUM_CLASSES, (batch, height, width)).astype("int32")
    masks[:, :3] = 255
    return images, masks


class TestAttentionToScale(TestCase):
    def test_head_and_names(self):
        assert [scale_output_name(s) for s in (1.0, 0.75, 0.5, 1.25)] == [
            "scale_100", "scale_075", "scale_050", "scale_125"]
        layer = AttentionToScaleHead(3, channels=4, activation="leaky_relu")
        scores, features = layer(np.random.rand(1, 5, 4, 6).astype("float32"))
        assert tuple(scores.shape) == (1, 5, 4, 3) and tuple(features.shape) == (1, 5, 4, 4)
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(revived) is AttentionToScaleHead and revived.get_config() == layer.get_config()

    def test_outputs_fit_and_save(self):
        images, masks = _data()
        model = AttentionToScale(NUM_CLASSES, **TINY)
        assert model.segmentation_output_names == OUTPUTS
        assert model.default_loss_weights == {name: 1.0 for name in OUTPUTS}
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
        assert type(restored) is AttentionToScale and restored.get_config() == model.get_config()
        self.assertAllClose(restored(images[:1], training=False), expected, atol=1e-5, rtol=1e-5)
        self.assertAllClose(restored.predict(images[:1], verbose=0), expected["logits"],
                            atol=1e-5, rtol=1e-5)

    def test_mixed_precision_and_registry(self):
        keras.config.set_dtype_policy("mixed_float16")
        model = get("attention_to_scale", num_classes=NUM_CLASSES, aux_head=False,
                    scales=(1.0, 0.5), activation="leaky_relu", **TINY)
        assert isinstance(model, AttentionToScale)
        assert model.segmentation_output_names == ["logits"]
        logits = keras.ops.convert_to_numpy(model(_data(1, 35, 29)[0])["logits"])
        assert logits.shape == (1, 35, 29, NUM_CLASSES) and logits.dtype == np.float32
        assert np.all(np.isfinite(logits))

    @pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(num_classes=2.5),
                                        dict(num_classes=3, activation="gelu"),
                                        dict(num_classes=3, scales=(0.75, 0.5)),
                                        dict(num_classes=3, scales=(1.0, 1.001)),
                                        dict(num_classes=3, scales=(1.0, -0.5))])
    def test_invalid_arguments(self, kwargs):
        with pytest.raises(ValueError):
            AttentionToScale(backbone="resnet_tiny", **kwargs)

import keras
import numpy as np

from keras_segattn.models import AttentionToScale
from keras_segattn.heads import AttentionToScaleHead
from keras_segattn.models.attention_to_scale import scale_output_name
from keras_segattn.testing import TestCase

from model_checks import (
    TINY, check_invalid_arguments, check_mixed_precision_and_registry, check_model_contract,
)

OUTPUTS = ["logits", "scale_050", "scale_075", "scale_100"]
SMALL = dict(channels=8, attention_channels=8)


class TestAttentionToScale(TestCase):
    def test_head_and_names(self):
        assert [scale_output_name(s) for s in (1.0, 0.75, 0.5, 1.25)] == [
            "scale_100", "scale_075", "scale_050", "scale_125"]
        layer = AttentionToScaleHead(3, channels=4, activation="leaky_relu")
        scores, features = layer(np.random.rand(1, 5, 4, 6).astype("float32"))
        assert tuple(scores.shape) == (1, 5, 4, 3) and tuple(features.shape) == (1, 5, 4, 4)
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(revived) is AttentionToScaleHead and revived.get_config() == layer.get_config()

    def test_contract(self):
        model = AttentionToScale(5, backbone=TINY, **SMALL)
        check_model_contract(model, OUTPUTS, 5, loss_weights={name: 1.0 for name in OUTPUTS})

    def test_mixed_precision_and_registry(self):
        check_mixed_precision_and_registry("attention_to_scale", AttentionToScale, 5,
                                           backbone=TINY, aux_head=False, scales=(1.0, 0.5),
                                           activation="leaky_relu", **SMALL)

    def test_invalid_arguments(self):
        check_invalid_arguments(AttentionToScale, extra=[
            dict(num_classes=3, scales=(0.75, 0.5)), dict(num_classes=3, scales=(1.0, 1.001)),
            dict(num_classes=3, scales=(1.0, -0.5))])

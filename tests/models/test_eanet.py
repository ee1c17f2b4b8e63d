import keras
import numpy as np
import pytest

from keras_segattn.models import EANet
from keras_segattn.heads import EANetHead
from keras_segattn.testing import TestCase

from model_checks import (
    TINY, check_invalid_arguments, check_mixed_precision_and_registry, check_model_contract,
)

SMALL = dict(channels=16, key_channels=8, value_channels=8, num_heads=2)


class TestEANet(TestCase):
    def test_head(self):
        layer = EANetHead(3, channels=8, key_channels=4, value_channels=8, num_heads=2,
                          activation="leaky_relu")
        assert tuple(layer(np.random.rand(2, 5, 4, 12).astype("float32")).shape) == (2, 5, 4, 3)
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(revived) is EANetHead and revived.get_config() == layer.get_config()
        with pytest.raises(ValueError, match="num_heads"):
            EANetHead(3, key_channels=6, num_heads=4)

    def test_contract(self):
        model = EANet(5, backbone=TINY, **SMALL)
        check_model_contract(model, ["aux", "logits"], 5, loss_weights={"logits": 1.0, "aux": 0.4})

    def test_mixed_precision_and_registry(self):
        check_mixed_precision_and_registry("eanet", EANet, 5, backbone=TINY, aux_head=False,
                                           activation="leaky_relu", **SMALL)

    def test_invalid_arguments(self):
        check_invalid_arguments(EANet)

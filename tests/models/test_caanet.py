import keras
import numpy as np
import pytest

from keras_segattn.models import CAANet
from keras_segattn.heads import CAAHead
from keras_segattn.testing import TestCase

from model_checks import (
    TINY, check_invalid_arguments, check_mixed_precision_and_registry, check_model_contract,
)

SMALL = dict(filters=16, channels=8, attention_options={"key_channels": 8, "gate_layers": 1})


class TestCAANet(TestCase):
    def test_head(self):
        layer = CAAHead(3, filters=8, channels=8, activation="leaky_relu",
                        attention_options={"key_channels": 4})
        assert tuple(layer(np.random.rand(2, 5, 4, 12).astype("float32")).shape) == (2, 5, 4, 3)
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(revived) is CAAHead and revived.get_config() == layer.get_config()
        with pytest.raises(ValueError, match="filters"):
            CAAHead(3, attention_options={"filters": 8})

    def test_contract(self):
        model = CAANet(5, backbone=TINY, **SMALL)
        check_model_contract(model, ["aux", "logits"], 5, loss_weights={"logits": 1.0, "aux": 0.4})

    def test_mixed_precision_and_registry(self):
        check_mixed_precision_and_registry("caanet", CAANet, 5, backbone=TINY, aux_head=False,
                                           activation="leaky_relu", **SMALL)

    def test_invalid_arguments(self):
        check_invalid_arguments(CAANet)

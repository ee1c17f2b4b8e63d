import keras
import numpy as np
import pytest

from keras_segattn.models import LANet
from keras_segattn.heads import LANetHead
from keras_segattn.testing import TestCase

from model_checks import (
    TINY, check_invalid_arguments, check_mixed_precision_and_registry, check_model_contract,
)

SMALL = dict(inter_channels=16, aux_channels=8)


class TestLANet(TestCase):
    def test_head(self):
        layer = LANetHead(3, inter_channels=8, activation="leaky_relu")
        assert tuple(layer(np.random.rand(2, 5, 4, 12).astype("float32")).shape) == (2, 5, 4, 3)
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(revived) is LANetHead and revived.get_config() == layer.get_config()
        with pytest.raises(ValueError, match="reduction"):
            LANetHead(3, inter_channels=4)(np.zeros((1, 4, 4, 8), "float32"))

    def test_contract(self):
        model = LANet(5, backbone=TINY, **SMALL)
        check_model_contract(model, ["aux", "logits"], 5, loss_weights={"logits": 1.0, "aux": 0.4})

    def test_mixed_precision_and_registry(self):
        check_mixed_precision_and_registry("lanet", LANet, 5, backbone=TINY, aux_head=False,
                                           activation="leaky_relu", **SMALL)

    def test_invalid_arguments(self):
        check_invalid_arguments(LANet)

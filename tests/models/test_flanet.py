import keras
import numpy as np

from keras_segattn.models import FLANet
from keras_segattn.models.flanet import FLANetHead, FLANetOutput
from keras_segattn.testing import TestCase

from model_checks import (
    TINY, check_invalid_arguments, check_mixed_precision_and_registry, check_model_contract,
)

SMALL = dict(channels=16, aux_channels=8)


class TestFLANet(TestCase):
    def test_heads(self):
        x = np.random.rand(1, 5, 4, 12).astype("float32")
        for layer, shape in ((FLANetOutput(3, mid_channels=8), (1, 10, 8, 3)),
                             (FLANetHead(3, channels=8, activation="leaky_relu"), (1, 10, 8, 3))):
            assert tuple(layer(x).shape) == shape
            revived = keras.saving.deserialize_keras_object(
                keras.saving.serialize_keras_object(layer))
            assert type(revived) is type(layer) and revived.get_config() == layer.get_config()

    def test_contract(self):
        model = FLANet(5, backbone=TINY, **SMALL)
        check_model_contract(model, ["aux_stage2", "aux_stage3", "logits"], 5,
                             loss_weights={"logits": 1.0, "aux_stage2": 0.4, "aux_stage3": 0.4})

    def test_mixed_precision_and_registry(self):
        check_mixed_precision_and_registry("flanet", FLANet, 5, backbone=TINY, aux_head=False,
                                           activation="leaky_relu", **SMALL)

    def test_invalid_arguments(self):
        check_invalid_arguments(FLANet)

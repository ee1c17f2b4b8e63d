import keras
import numpy as np

from keras_segattn.models import SANet
from keras_segattn.heads import SANetHead
from keras_segattn.losses import SANetCategoricalLoss, class_presence
from keras_segattn.testing import TestCase

from model_checks import (
    TINY, check_invalid_arguments, check_mixed_precision_and_registry, check_model_contract,
)

SMALL = dict(stage_channels=8, channels=8)


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

    def test_contract(self):
        model = SANet(5, backbone=TINY, **SMALL)
        check_model_contract(model, ["aux", "image_logits", "logits"], 5,
                             loss_weights={"logits": 1.0, "aux": 0.8, "image_logits": 0.2},
                             image_level=["image_logits"])

    def test_mixed_precision_and_registry(self):
        check_mixed_precision_and_registry("sanet", SANet, 5, backbone=TINY, aux_head=False,
                                           categorical_loss=False, activation="leaky_relu",
                                           **SMALL)

    def test_invalid_arguments(self):
        check_invalid_arguments(SANet)

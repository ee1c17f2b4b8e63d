import keras
import numpy as np

from keras_segattn import heads, models
from keras_segattn.testing import TestCase

from model_checks import TINY, check_model_contract


class TestFCN(TestCase):
    def test_contract(self):
        model = models.FCN(num_classes=3, backbone=TINY, channels=16, aux_channels=16)
        assert model.get_layer("head").channels == 16
        check_model_contract(model, ["logits", "aux"], 3)

    def test_head_layer(self):
        self.run_layer_test(
            heads.FCNHead,
            dict(num_classes=3, channels=8),
            np.random.default_rng(0).normal(size=(2, 5, 6, 12)).astype("float32"),
            expected_output_shape=(2, 5, 6, 3),
            run_saving_check=False,
        )

    def test_head_reference_keys(self):
        head = heads.FCNHead(3, channels=8, num_convs=2, concat_input=True)
        head.build((1, 4, 4, 12))  # the mapping needs the variables, not a forward pass
        keys = set(head.reference_weight_mapping())
        assert {"convs.0.conv.weight", "convs.1.bn.running_var", "conv_cat.conv.weight",
                "conv_seg.weight", "conv_seg.bias"} <= keys

    def test_no_aux(self):
        model = models.FCN(num_classes=3, backbone=TINY, channels=8, aux_head=False)
        assert list(model.compute_output_spec(keras.KerasTensor((1, 16, 16, 3)))) == ["logits"]
        assert model.default_loss_weights == {"logits": 1.0}

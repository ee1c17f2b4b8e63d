import numpy as np

from keras_segattn import heads, models
from keras_segattn.testing import TestCase

from model_checks import TINY, check_model_contract


class TestNonLocalNet(TestCase):
    def test_contract(self):
        model = models.NonLocalNet(num_classes=3, backbone=TINY, channels=16, aux_channels=16)
        check_model_contract(model, ["logits", "aux"], 3)

    def test_head_reference_keys_and_config(self):
        head = heads.NLHead(3, channels=8)
        x = np.random.default_rng(0).normal(size=(1, 5, 6, 12)).astype("float32")
        head(x)
        keys = set(head.reference_weight_mapping())
        assert {"convs.0.conv.weight", "nl_block.theta.conv.weight", "nl_block.conv_out.bn.weight",
                "conv_cat.bn.running_var", "conv_seg.bias"} <= keys
        self.run_serialization_test(head, [x], atol=1e-5, rtol=1e-5)

import pytest

from keras_segattn import convert, heads, models
from keras_segattn.testing import TestCase

from model_checks import TINY, check_model_contract, golden


class TestISANet(TestCase):
    def test_contract(self):
        model = models.ISANet(num_classes=3, backbone=TINY, channels=16, key_channels=8,
                              value_channels=16, down_factor=(2, 2), aux_channels=16)
        assert model.get_layer("head").isa.down_factor == (2, 2)
        check_model_contract(model, ["logits", "aux"], 3)

    @pytest.mark.parametrize("case", ["isa_module", "isa_module_cout"])
    def test_golden_isa_module(self, case):
        # isa_module_cout: out_channels 24 != in_channels 16 (the block projects to 24 and
        # the fusion conv sees 16 + 24 channels, as the official ISA_Module).
        data, meta, state = golden(case)
        kwargs = meta["constructor_kwargs"]
        module = heads.ISAModule(kwargs["key_channels"], kwargs["value_channels"],
                                 kwargs["out_channels"], down_factor=tuple(kwargs["down_factors"][0]),
                                 dropout=kwargs["dropout"])
        module(data["input"])
        expected_keys = {p["key"] for p in meta["params"] if "num_batches" not in p["key"]}
        assert set(module.reference_weight_mapping()) == expected_keys
        convert.load_reference_weights(module, state)
        self.assertAllClose(module(data["input"], training=False), data["output"],
                            atol=meta["tolerance"]["atol"], rtol=meta["tolerance"]["rtol"])

    def test_head_reference_keys(self):
        head = heads.ISAHead(3, channels=16, key_channels=8, value_channels=16, down_factor=(4, 4))
        head.build((1, 9, 10, 32))  # the mapping needs the variables, not a forward pass
        keys = set(head.reference_weight_mapping())
        assert {"isa_head.0.weight", "isa_head.1.0.running_mean", "isa_head.2.conv_bn.0.weight",
                "isa_head.2.stages.0.long_range_sa.f_value.weight", "cls_head.bias"} <= keys

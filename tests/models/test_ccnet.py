from keras_segattn import convert, heads, models
from keras_segattn.testing import TestCase

from model_checks import TINY, check_model_contract, golden


class TestCCNet(TestCase):
    def test_contract(self):
        model = models.CCNet(num_classes=3, backbone=TINY, channels=16, aux_channels=16)
        head = model.get_layer("head")
        assert head.recurrence == 2 and head.activation == "leaky_relu"
        assert model.get_layer("aux_head").use_bias  # official dsn head: conv with bias
        check_model_contract(model, ["logits", "aux"], 3)

    def test_golden_rcca(self):
        data, meta, state = golden("ccnet_rcca")
        kwargs = meta["constructor_kwargs"]
        head = heads.CCHead(kwargs["num_classes"], recurrence=meta["forward_kwargs"]["recurrence"],
                            channels=kwargs["out_channels"])
        head(data["input"])
        convert.load_reference_weights(head, state)
        self.assertAllClose(head(data["input"], training=False), data["output"],
                            atol=meta["tolerance"]["atol"], rtol=meta["tolerance"]["rtol"])

    def test_recurrence_shares_weights(self):
        one, two = heads.CCHead(3, recurrence=1, channels=8), heads.CCHead(3, recurrence=2, channels=8)
        one.build((1, 5, 5, 32)), two.build((1, 5, 5, 32))
        assert len(one.weights) == len(two.weights)

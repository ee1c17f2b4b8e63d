import numpy as np
import pytest

from keras_segattn import convert, heads, models
from keras_segattn.testing import TestCase

from model_checks import TINY, check_model_contract, golden


class TestDANet(TestCase):
    def test_contract(self):
        model = models.DANet(num_classes=3, backbone=TINY, aux_channels=16)
        assert model.default_loss_weights == {"logits": 1.0, "pam": 1.0, "cam": 1.0, "aux": 0.4}
        head = model.get_layer("head")
        # inter = C5 / 4, PAM query/key = inter / 8 (tiny C5 has 256 channels)
        assert head.conv5a.filters == 64 and head.sa.query_conv.filters == 8
        check_model_contract(model, ["logits", "pam", "cam", "aux"], 3)

    def test_golden_head(self):
        data, meta, state = golden("danet_head")
        head = heads.DANetHead(meta["constructor_kwargs"]["out_channels"])
        head(data["input"])
        convert.load_reference_weights(head, state)
        outputs = head(data["input"], training=False)
        tol = {k: meta["tolerance"][k] for k in ("atol", "rtol")}
        for i, output in enumerate(outputs):
            self.assertAllClose(output, data[f"output_{i}"], **tol, msg=f"output_{i}")

    def test_head_serialization(self):
        head = heads.DANetHead(5, dropout=0.0, activation="leaky_relu")
        x = np.random.default_rng(0).normal(size=(1, 5, 4, 64)).astype("float32")
        head(x)
        self.run_serialization_test(head, [x], atol=1e-5, rtol=1e-5)

    @pytest.mark.large
    def test_default_resnet50(self):
        model = models.DANet(num_classes=19)
        assert model.backbone.count_params() > 20_000_000

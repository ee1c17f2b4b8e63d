import keras
import numpy as np
import pytest

from keras_segattn import layers, models
from keras_segattn.optimizers import SGD
from keras_segattn.recipe import WarmupPolyDecay
from keras_segattn.testing import TestCase

from model_checks import TINY, images, labels


class TestRegistry(TestCase):
    def test_list_and_get(self):
        names = models.list_models()
        for name in ("FCN", "NonLocalNet", "DANet", "CCNet", "ISANet"):
            assert name in names
        with pytest.raises(ValueError, match="DANet"):
            models.get("no_such_model")

    def test_bad_backbone(self):
        with pytest.raises((ValueError, TypeError)):
            models.FCN(num_classes=3, backbone=3)


class TestImageNormalization(TestCase):
    def test_layer(self):
        self.run_layer_test(
            layers.ImageNormalization, {},
            np.random.default_rng(0).uniform(0, 255, (2, 4, 5, 3)).astype("float32"),
            expected_output_shape=(2, 4, 5, 3), run_saving_check=False,
        )

    def test_values_and_errors(self):
        y = layers.ImageNormalization()(np.full((1, 1, 1, 3), 255, "uint8"))
        expected = (255 - np.array(layers.normalization.IMAGENET_MEAN)) / np.array(
            layers.normalization.IMAGENET_STD)
        self.assertAllClose(keras.ops.reshape(y, (3,)), expected, atol=1e-5)
        with pytest.raises(ValueError, match="channels"):
            layers.ImageNormalization()(np.zeros((1, 2, 2, 4), "float32"))


class TestNamedModelRecipe(TestCase):
    def test_head_lr_multiplier(self):
        model = models.get("danet", num_classes=3, backbone=TINY, inter_channels=8,
                           aux_channels=8)
        model.compile(head_lr_multiplier=10.0)
        model.optimizer.build(model.trainable_variables)
        multipliers = {v.path: model.optimizer.multiplier_for(v)
                       for v in model.trainable_variables}
        backbone_paths = {v.path for v in model.backbone.trainable_variables}
        assert backbone_paths and all(multipliers[p] == 1.0 for p in backbone_paths)
        head_paths = set(multipliers) - backbone_paths
        assert any(p.startswith("head/") for p in head_paths)
        assert any(p.startswith("aux_head/") for p in head_paths)
        assert all(multipliers[p] == 10.0 for p in head_paths)
        # The recipe (with its multiplier) survives a .keras round trip.
        assert model.get_compile_config()["segattn_recipe"]["head_lr_multiplier"] == 10.0

    def test_warmup(self):
        model = models.get("fcn", num_classes=3, backbone=TINY, channels=8, aux_channels=8)
        model.compile(steps=100, warmup_steps=10)
        schedule = model.optimizer._learning_rate
        assert isinstance(schedule, WarmupPolyDecay)
        rates = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 5, 10, 100)]
        assert rates[0] < 1e-7 < rates[1] < rates[2]  # linear from ~0
        assert abs(rates[3] - 1e-4) < 1e-9  # poly down to end_learning_rate
        assert model.get_compile_config()["segattn_recipe"]["warmup_steps"] == 10

    def test_recipe_labels_inference_and_mixed_precision(self):
        keras.config.set_dtype_policy("mixed_float16")
        model = models.get("fcn", num_classes=4, backbone=TINY, channels=8, aux_channels=8,
                           align_corners=True)
        keras.config.set_dtype_policy("float32")
        assert model.get_layer("head").compute_dtype == "float16"
        x = np.random.default_rng(0).integers(0, 255, (1, 37, 45, 3)).astype("uint8")
        predicted = model.predict(x, verbose=0)
        assert predicted.shape == (1, 37, 45, 4) and predicted.dtype == np.float32
        assert np.all(np.isfinite(predicted))

        model.compile()
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # loss scaling
        assert isinstance(optimizer, SGD) and optimizer.momentum == 0.9
        # PyTorch's (mmseg's) L2 decay, not Keras' decoupled one; tests/test_optimizers.py
        # checks the update rule against torch.optim.SGD.
        assert optimizer.l2_weight_decay == 5e-4 and optimizer.weight_decay is None
        assert optimizer.lr_multipliers == {}
        schedule = optimizer._learning_rate  # the recipe's one schedule (mmseg PolyLR)
        assert isinstance(schedule, WarmupPolyDecay) and schedule.warmup_steps == 0
        assert schedule.power == 0.9 and schedule.initial_lr == 0.01
        assert model.default_loss_weights == {"logits": 1.0, "aux": 0.4}

        # (B, H, W, 1) labels are broadcast to every output too; evaluate works.
        y = labels(4)[..., None]
        logs = model.evaluate(images(), y, batch_size=2, verbose=0, return_dict=True)
        assert {"loss", "logits_loss", "aux_loss", "logits_mean_iou"} <= set(logs)

        inference = model.inference_model()
        assert len(inference.outputs) == 1
        self.assertAllClose(inference.predict(x, verbose=0), predicted, atol=1e-5, rtol=1e-5)
        assert "backbone" in [layer.name for layer in model.layers]

"""The KerasCV-layout dilated ResNets (resnet_tiny, *_kerascv, saved models), built without
keras_cv; compared with KerasCV's own classes when keras-cv is installed."""

import json
import math

import keras
import numpy as np
import pytest

from backbone_checks import H, W, conv_geometry, image, layer_table
from keras_segattn.backbones import (
    DilatedResNetBackbone, DilatedResNetV2Backbone, WeightsNotAvailableError, backbone_config,
    get_backbone, stage_channels, stage_outputs,
)
from keras_segattn.testing import TestCase

TINY = dict(stackwise_filters=[8, 16, 32, 64], stackwise_strides=[1, 2, 2, 2],
            include_rescaling=False)
# Basic blocks: KerasCV's stage 1 has an identity shortcut on the 64-channel stem.
BASIC = dict(stackwise_filters=[64, 16, 32, 64], stackwise_strides=[1, 2, 2, 2],
             include_rescaling=False, block_type="basic_block")


@pytest.fixture
def keras_cv():
    return pytest.importorskip("keras_cv")  # an optional dependency; the `test` extra has it


class TestFeatureStrides(TestCase):
    @pytest.mark.parametrize("name", ["resnet_tiny", "resnet_tiny_v2"])
    @pytest.mark.parametrize("output_stride", [8, 16, 32])
    def test_stage_shapes(self, name, output_stride):
        backbone = get_backbone(name, output_stride=output_stride)
        assert type(backbone) is (DilatedResNetV2Backbone if name.endswith("v2")
                                  else DilatedResNetBackbone)
        assert backbone.include_rescaling is False
        features = keras.Model(backbone.input, stage_outputs(backbone))(image())
        strides = [4, 8, min(16, output_stride), min(32, output_stride)]
        channels = [32, 64, 128, 256]
        for i, (stride, ch) in enumerate(zip(strides, channels)):
            shape = tuple(features[f"stage{i + 1}"].shape)
            assert shape == (1, math.ceil(H / stride), math.ceil(W / stride), ch), (i, shape)
        assert stage_channels(backbone) == {f"stage{i + 1}": c for i, c in enumerate(channels)}
        assert sorted(backbone.pyramid_level_inputs) == ["P2", "P3", "P4", "P5"]
        assert backbone.output_stride == output_stride


class TestDilationRates(TestCase):
    def test_v1_bottleneck_os8_and_os16(self):
        rates = conv_geometry(get_backbone("resnet_tiny", output_stride=8))
        assert rates["v2_stack_1_block1_1_conv"] == (2, 1)  # stage 2 keeps its stride
        assert rates["v2_stack_2_block1_0_conv"] == (1, 1)
        assert rates["v2_stack_2_block1_1_conv"] == (1, 1)
        assert rates["v2_stack_2_block1_2_conv"] == (1, 2)
        assert rates["v2_stack_3_block1_0_conv"] == (1, 1)
        assert rates["v2_stack_3_block1_1_conv"] == (1, 1)
        assert rates["v2_stack_3_block1_2_conv"] == (1, 4)
        rates = conv_geometry(get_backbone("resnet_tiny", output_stride=16))
        assert rates["v2_stack_2_block1_1_conv"] == (2, 1)
        assert rates["v2_stack_2_block1_2_conv"] == (1, 1)
        assert rates["v2_stack_3_block1_1_conv"] == (1, 1)
        assert rates["v2_stack_3_block1_2_conv"] == (1, 2)
        rates = conv_geometry(get_backbone("resnet_tiny", output_stride=32))
        assert all(d == 1 for _, d in rates.values())

    def test_v1_basic_block(self):
        model = DilatedResNetBackbone(**BASIC, stackwise_blocks=[1, 1, 1, 2], output_stride=8)
        rates = conv_geometry(model)
        # The conv that carried the stride keeps the previous rate (torchvision rule).
        assert rates["v2_stack_2_block1_1_conv"] == (1, 1)
        assert rates["v2_stack_2_block1_2_conv"] == (1, 2)
        assert rates["v2_stack_3_block1_1_conv"] == (1, 2)
        assert rates["v2_stack_3_block1_2_conv"] == (1, 4)
        assert rates["v2_stack_3_block2_1_conv"] == (1, 4)
        assert model.stackwise_dilations == [1, 1, 2, 4]

    def test_v2_os8_os16(self):
        # KerasCV V2 puts the stride in the LAST block of a stage, so stage 3 already runs at
        # stride 8 until its last conv: only stage 4 needs dilation at OS8.
        model = get_backbone("resnet_tiny_v2", output_stride=8)
        rates = conv_geometry(model)
        assert rates["v2_stack_1_block2_2_conv"] == (2, 1)
        assert rates["v2_stack_2_block1_2_conv"] == (1, 1)
        assert rates["v2_stack_2_block2_2_conv"] == (1, 1)
        assert rates["v2_stack_3_block1_2_conv"] == (1, 2)
        assert rates["v2_stack_3_block2_2_conv"] == (1, 2)
        assert model.stackwise_dilations == [1, 1, 1, 2]
        rates = conv_geometry(get_backbone("resnet_tiny_v2", output_stride=16))
        assert rates["v2_stack_2_block2_2_conv"] == (2, 1)
        assert rates["v2_stack_3_block2_2_conv"] == (1, 1)  # only the final stride removed
        assert all(d == 1 for _, d in rates.values())

    def test_multi_grid(self):
        rates = conv_geometry(get_backbone("resnet_tiny_v2", output_stride=8, multi_grid=(1, 2, 4)))
        assert rates["v2_stack_3_block1_2_conv"] == (1, 2)
        assert rates["v2_stack_3_block2_2_conv"] == (1, 4)
        assert rates["v2_stack_2_block1_2_conv"] == (1, 1)
        model = DilatedResNetBackbone(**TINY, stackwise_blocks=[1, 1, 1, 3], output_stride=8,
                                      multi_grid=[1, 2, 4])
        rates = conv_geometry(model)
        assert [rates[f"v2_stack_3_block{i}_2_conv"][1] for i in (1, 2, 3)] == [4, 8, 16]
        assert rates["v2_stack_2_block1_2_conv"] == (1, 2)
        assert model.get_config()["multi_grid"] == [1, 2, 4]


class TestKerasCVCompatibility(TestCase):
    @pytest.mark.parametrize("output_stride", [8, 32])
    def test_v1_layers_identical(self, output_stride, keras_cv):
        model = DilatedResNetBackbone(**TINY, stackwise_blocks=[1, 1, 2, 1],
                                      output_stride=output_stride)
        plain = keras_cv.models.ResNetBackbone(**TINY, stackwise_blocks=[1, 1, 2, 1])
        assert layer_table(model) == layer_table(plain)
        assert model.pyramid_level_inputs == plain.pyramid_level_inputs
        if output_stride == 32:  # same graph: same outputs with the same weights
            model.set_weights(plain.get_weights())
            self.assertAllClose(model(image()), plain(image()), atol=1e-5, rtol=1e-5)
        plain_basic = keras_cv.models.ResNetBackbone(**BASIC, stackwise_blocks=[1, 1, 1, 2])
        basic = DilatedResNetBackbone(**BASIC, stackwise_blocks=[1, 1, 1, 2],
                                      output_stride=output_stride)
        assert layer_table(basic) == layer_table(plain_basic)

    def test_v2_layers_identical(self, keras_cv):
        plain = keras_cv.models.ResNetV2Backbone(**TINY, stackwise_blocks=[2, 2, 2, 2])
        undilated = DilatedResNetV2Backbone(**TINY, stackwise_blocks=[2, 2, 2, 2])
        assert layer_table(undilated) == layer_table(plain)
        undilated.set_weights(plain.get_weights())
        self.assertAllClose(undilated(image()), plain(image()), atol=1e-5, rtol=1e-5)
        # Dilated: the weightless 1x1 max-pool shortcuts of removed strides disappear.
        dilated = DilatedResNetV2Backbone(**TINY, stackwise_blocks=[2, 2, 2, 2], output_stride=8)
        assert layer_table(dilated, True) == layer_table(plain, True)
        assert dilated.pyramid_level_inputs == plain.pyramid_level_inputs

    def test_load_weights_from_kerascv(self, tmp_path, keras_cv):
        plain = keras_cv.models.ResNetBackbone(**TINY, stackwise_blocks=[1, 1, 1, 1])
        path = str(tmp_path / "plain.weights.h5")
        plain.save_weights(path)
        model = get_backbone("resnet_tiny", output_stride=8, weights=path)
        for a, b in zip(model.get_weights(), plain.get_weights()):
            np.testing.assert_array_equal(a, b)
        # A KerasCV preset directory (what KerasCV's save_to_preset writes: config.json with
        # the serialized backbone and "weights", model.weights.h5), include_rescaling=True.
        plain_v2 = keras_cv.models.ResNetV2Backbone(**{**TINY, "include_rescaling": True},
                                                    stackwise_blocks=[2, 2, 2, 2])
        preset = tmp_path / "preset_v2"
        preset.mkdir()
        plain_v2.save_weights(str(preset / "model.weights.h5"))
        config = {**keras.saving.serialize_keras_object(plain_v2), "weights": "model.weights.h5"}
        (preset / "config.json").write_text(json.dumps(config))
        model_v2 = get_backbone("resnet_tiny_v2", output_stride=8, weights=str(preset))
        for a, b in zip(model_v2.get_weights(), plain_v2.get_weights()):
            np.testing.assert_array_equal(a, b)
        assert model_v2.input_normalization == {"mean": [0.0] * 3, "std": [255.0] * 3}
        with pytest.raises(ValueError, match="does not match ResNet V1"):
            get_backbone("resnet_tiny", weights=str(preset))

    def test_kerascv_imagenet_offline(self, monkeypatch, keras_cv):
        def offline(preset, **kwargs):
            raise ConnectionError("Failed to resolve 'api.kaggle.com'")

        monkeypatch.setattr(keras_cv.models.ResNetBackbone, "from_preset", offline)
        with pytest.raises(WeightsNotAvailableError,
                           match=r"resnet50_imagenet.*save_weights\('resnet50_kerascv"):
            get_backbone("resnet50_kerascv", weights="imagenet")


class TestCompiledTraining(TestCase):
    def test_jit_compiled_fcn_trains_and_predicts_as_eager(self):
        """``model.compile(jit_compile=True)`` (torch: ``torch.compile``; XLA elsewhere) of an
        FCN on ``resnet_tiny`` (the CLI's default backbone) predicts and takes a training step
        as the eager model does. On torch it failed at the first step, in Inductor, on the
        gradient of Keras' "same" max pooling of the stem (``layers.MaxPooling2D``).
        (Compiled calls at several image sizes: ``tests/layers/test_conv.py``; a whole model
        at a second size compiles with symbolic sizes, which took Inductor minutes here.)"""
        from keras_segattn import models

        compiled_and_eager = []
        for jit_compile in (True, False):
            keras.utils.set_random_seed(0)
            # No dropout: the compiled and eager random streams differ.
            model = models.get("fcn", num_classes=3, backbone="resnet_tiny", aux_head=False,
                               channels=32, dropout=0.0)
            model.compile(optimizer=keras.optimizers.SGD(0.01),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          jit_compile=jit_compile)
            compiled_and_eager.append(model)
        compiled, eager = compiled_and_eager
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        y = rng.integers(0, 3, (2, 32, 32)).astype("int32")
        self.assertAllClose(compiled.predict_on_batch(x), eager.predict_on_batch(x),
                            atol=1e-4, rtol=1e-4)
        self.assertAllClose(compiled.train_on_batch(x, y), eager.train_on_batch(x, y),
                            atol=1e-5, rtol=1e-5)
        for a, b in zip(compiled.get_weights(), eager.get_weights()):  # one SGD step
            self.assertAllClose(a, b, atol=1e-4, rtol=1e-4)


class TestSerializationAndErrors(TestCase):
    @pytest.mark.parametrize("name", ["resnet_tiny", "resnet_tiny_v2"])
    def test_round_trip(self, name):
        model = get_backbone(name, output_stride=8, multi_grid=(1, 2))
        config = backbone_config(model)
        json.dumps(config)
        revived = get_backbone(config)
        assert type(revived) is type(model)
        assert revived.get_config() == model.get_config()
        assert conv_geometry(revived) == conv_geometry(model)
        revived.set_weights(model.get_weights())
        self.assertAllClose(revived(image()), model(image()), atol=1e-5, rtol=1e-5)

    def test_keras_file_round_trip(self):
        model = get_backbone("resnet_tiny", output_stride=8, multi_grid=(1, 2),
                             input_normalization={"mean": 1, "std": 2})
        restored = self.run_model_saving_test(model, image(), atol=1e-5, rtol=1e-5)
        assert restored.output_stride == 8 and restored.multi_grid == [1, 2]
        assert restored.input_normalization == {"mean": [1.0] * 3, "std": [2.0] * 3}
        assert conv_geometry(restored) == conv_geometry(model)
        assert restored.pyramid_level_inputs == model.pyramid_level_inputs

    def test_include_rescaling_is_the_only_normalisation(self):
        model = DilatedResNetBackbone(**{**TINY, "include_rescaling": True},
                                      stackwise_blocks=[1, 1, 1, 1])
        assert isinstance(model.layers[1], keras.layers.Rescaling)
        assert model.input_normalization == {"mean": [0.0] * 3, "std": [1.0] * 3}

    def test_bad_weights_files(self, tmp_path):
        bad = tmp_path / "bad.weights.h5"
        bad.write_bytes(b"not an h5 file")
        with pytest.raises(ValueError, match="bad.weights.h5"):
            get_backbone("resnet_tiny", weights=str(bad))
        other = str(tmp_path / "v2.weights.h5")
        get_backbone("resnet_tiny_v2").save_weights(other)
        with pytest.raises(ValueError, match="v2.weights.h5"):
            get_backbone("resnet_tiny", weights=other)
        (tmp_path / "weights.npz").write_bytes(b"")
        with pytest.raises(ValueError, match="weights.npz"):
            get_backbone("resnet_tiny", weights=str(tmp_path / "weights.npz"))

    def test_v2_rejects_kerascv_dilations(self):
        with pytest.raises(ValueError, match="output_stride"):
            DilatedResNetV2Backbone(**TINY, stackwise_blocks=[2, 2, 2, 2],
                                    stackwise_dilations=[1, 1, 2, 4])
        with pytest.raises(ValueError, match="at least 2 blocks"):
            DilatedResNetV2Backbone(**TINY, stackwise_blocks=[1, 1, 1, 1])

"""DilatedKerasHubResNetBackbone: KerasHub's graphs (V1, vd, V2), dilated, with their presets."""

import json
import math
import warnings

import keras
import keras_hub
import numpy as np
import pytest

from backbone_checks import (
    CONVERTER_NORMALIZATION, H, KERASHUB_TINY, W, assert_same_outputs, assert_same_weights,
    conv_geometry, image, layer_table, make_kerashub_preset, randomize,
)
from keras_segattn.backbones import (
    DilatedKerasHubResNetBackbone, WeightsNotAvailableError, get_backbone, pyramid_outputs,
)
from keras_segattn.testing import TestCase


def _two_blocks(variant):
    """The tiny layout with 2 blocks in stages 3 and 4 (so that both rates show)."""
    return {**KERASHUB_TINY[variant], "stackwise_num_blocks": [1, 1, 2, 2]}


def _features(model, x):
    extractor = keras.Model(model.input, {**pyramid_outputs(model), "out": model.output})
    return {k: keras.ops.convert_to_numpy(v) for k, v in extractor(x).items()}


class TestKerasHubEquivalence(TestCase):
    @pytest.mark.parametrize("variant", sorted(KERASHUB_TINY))
    def test_os32_with_preset_weights_equals_kerashub(self, variant, tmp_path):
        # A preset saved from a random KerasHub backbone (BN statistics included) loads into
        # our OS32 graph, which then computes KerasHub's outputs, at every level.
        layout = KERASHUB_TINY[variant]
        make_kerashub_preset(tmp_path, layout)
        theirs = keras_hub.models.Backbone.from_preset(str(tmp_path))
        ours = DilatedKerasHubResNetBackbone.from_preset(str(tmp_path))
        assert layer_table(ours, weighted_only=True) == layer_table(theirs, weighted_only=True)
        assert_same_weights(ours, theirs)
        assert ours.output_stride == 32 and ours.layout() == {**dict(
            use_pre_activation=False), **layout}
        assert ours.input_normalization == CONVERTER_NORMALIZATION
        x = image()
        expected, got = _features(theirs, x), _features(ours, x)
        for key in expected:
            assert_same_outputs(got[key], expected[key], err_msg=key)

    @pytest.mark.parametrize("variant, output_stride", [
        ("v1_bottleneck", 8), ("vd_bottleneck", 16), ("v2_basic", 8), ("v1_basic", 32)])
    def test_feature_strides(self, variant, output_stride):
        model = DilatedKerasHubResNetBackbone(**KERASHUB_TINY[variant],
                                              output_stride=output_stride)
        spec = keras.Model(model.inputs, pyramid_outputs(model)).compute_output_spec(
            keras.KerasTensor((1, H, W, 3)))
        expansion = 4 if "bottleneck" in variant else 1
        for level, stride, filters in zip(("P2", "P3", "P4", "P5"),
                                          (4, 8, min(16, output_stride), min(32, output_stride)),
                                          (64, 8, 8, 16)):
            assert tuple(spec[level].shape) == (
                1, math.ceil(H / stride), math.ceil(W / stride), expansion * filters), level


class TestDilationRates(TestCase):
    def test_tiny_bottleneck_os8_os16_os32(self):
        layout = _two_blocks("v1_bottleneck")
        rates = conv_geometry(DilatedKerasHubResNetBackbone(**layout, output_stride=8))
        assert rates["stack1_block0_2_conv"] == (2, 1)  # stage 2 keeps its stride
        assert rates["stack1_block0_0_conv"] == (2, 1)
        # Stage 3 at rate 2, stage 4 at rate 4; the first block keeps half (its strided conv).
        assert rates["stack2_block0_2_conv"] == (1, 1) and rates["stack2_block1_2_conv"] == (1, 2)
        assert rates["stack3_block0_2_conv"] == (1, 2) and rates["stack3_block1_2_conv"] == (1, 4)
        assert rates["stack2_block0_0_conv"] == (1, 1) and rates["stack3_block0_0_conv"] == (1, 1)
        assert all(rates[n][1] == 1 for n in rates if n.endswith(("_1_conv", "_3_conv")))
        rates = conv_geometry(DilatedKerasHubResNetBackbone(**layout, output_stride=16))
        assert rates["stack2_block0_2_conv"] == (2, 1) and rates["stack2_block1_2_conv"] == (1, 1)
        assert rates["stack3_block0_2_conv"] == (1, 1) and rates["stack3_block1_2_conv"] == (1, 2)
        model = DilatedKerasHubResNetBackbone(**layout, output_stride=32)
        assert conv_geometry(model) == conv_geometry(keras_hub.models.ResNetBackbone(**layout))

    def test_basic_and_vd_blocks(self):
        model = DilatedKerasHubResNetBackbone(**_two_blocks("vd_basic"), output_stride=8)
        rates = conv_geometry(model)
        # Basic block: conv1 carries the (removed) stride at the previous rate, conv2 the new.
        assert rates["stack2_block0_1_conv"] == (1, 1) and rates["stack2_block0_2_conv"] == (1, 2)
        assert rates["stack3_block0_1_conv"] == (1, 2) and rates["stack3_block0_2_conv"] == (1, 4)
        assert rates["stack3_block1_1_conv"] == (1, 4)
        names = {layer.name for layer in model.layers}
        # vd: the shortcut's average pool goes with the stride it carried (mmseg avg_down).
        assert "stack1_block0_0_pool" in names and "stack2_block0_0_pool" not in names
        assert "stack1_block0_1_pad" in names and "stack2_block0_1_pad" not in names
        assert model.stackwise_dilations == [1, 1, 2, 4]

    def test_resnet101_the_papers_rates(self):
        # The real depth: OS8 stage 3 (23 blocks) at rate 2, stage 4 at rate 4, each stage's
        # first block at half the rate in its strided conv (DANet's PyTorch-Encoding ResNet,
        # mmseg contract_dilation, torchvision).
        rates = conv_geometry(get_backbone("resnet101", output_stride=8))
        stage3 = [rates[f"stack2_block{i}_2_conv"] for i in range(23)]
        stage4 = [rates[f"stack3_block{i}_2_conv"] for i in range(3)]
        assert stage3 == [(1, 1)] + [(1, 2)] * 22
        assert stage4 == [(1, 2), (1, 4), (1, 4)]
        assert [rates[f"stack1_block{i}_2_conv"] for i in range(4)] == [(2, 1)] + [(1, 1)] * 3
        assert {rates[f"stack{s}_block0_0_conv"] for s in (2, 3)} == {(1, 1)}

    def test_multi_grid(self):
        # multi_grid (1, 2, 4) at OS8: the last stage at 4, 8, 16 (DANet's multi_dilation),
        # its first block not contracted; the other stages unchanged.
        layout = {**KERASHUB_TINY["v1_bottleneck"], "stackwise_num_blocks": [1, 1, 2, 3]}
        model = DilatedKerasHubResNetBackbone(**layout, output_stride=8, multi_grid=(1, 2, 4))
        rates = conv_geometry(model)
        assert [rates[f"stack3_block{i}_2_conv"][1] for i in range(3)] == [4, 8, 16]
        assert [rates[f"stack2_block{i}_2_conv"][1] for i in range(2)] == [1, 2]
        assert model.get_config()["multi_grid"] == [1, 2, 4]


class TestSerialization(TestCase):
    def test_config_and_keras_file(self):
        model = DilatedKerasHubResNetBackbone(
            **KERASHUB_TINY["vd_bottleneck"], output_stride=8, multi_grid=(1, 2),
            input_normalization={"mean": 127.5, "std": [1, 2, 3]})
        config = keras.saving.serialize_keras_object(model)
        json.dumps(config)
        revived = keras.saving.deserialize_keras_object(config)
        assert type(revived) is DilatedKerasHubResNetBackbone
        assert revived.get_config() == model.get_config()
        assert revived.input_normalization == {"mean": [127.5] * 3, "std": [1.0, 2.0, 3.0]}
        restored = self.run_model_saving_test(randomize(model), image(), atol=1e-5, rtol=1e-5)
        assert restored.output_stride == 8 and restored.multi_grid == [1, 2]
        assert restored.input_normalization == model.input_normalization
        assert conv_geometry(restored) == conv_geometry(model)

    def test_save_to_preset_round_trip(self, tmp_path):
        model = randomize(DilatedKerasHubResNetBackbone(**KERASHUB_TINY["v2_basic"],
                                                        output_stride=16))
        model.save_to_preset(str(tmp_path))
        with pytest.warns(UserWarning, match="no image converter"):
            again = DilatedKerasHubResNetBackbone.from_preset(str(tmp_path), output_stride=8)
        assert_same_weights(again, model)
        assert again.output_stride == 8

    def test_mixed_precision(self):
        model = DilatedKerasHubResNetBackbone(**KERASHUB_TINY["v1_basic"], output_stride=8,
                                              dtype="mixed_bfloat16")
        out = model(image(height=32, width=32))
        assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
        assert {v.dtype for v in model.weights} == {"float32"}
        revived = DilatedKerasHubResNetBackbone.from_config(model.get_config())
        assert revived.dtype_policy.name == "mixed_bfloat16"


class TestPresetNormalizationAndErrors(TestCase):
    def test_legacy_converter_arguments(self, tmp_path):
        # PaddleClas vd presets were saved with ImageConverter(mean=, variance=, scale=1/255).
        converter = dict(mean=[0.485, 0.456, 0.406], variance=[0.229**2, 0.224**2, 0.225**2],
                         scale=1 / 255.0)
        make_kerashub_preset(tmp_path, KERASHUB_TINY["vd_basic"], converter=converter)
        model = DilatedKerasHubResNetBackbone.from_preset(str(tmp_path), output_stride=8)
        np.testing.assert_allclose(model.input_normalization["mean"],
                                   [123.675, 116.28, 103.53], rtol=1e-6)
        np.testing.assert_allclose(model.input_normalization["std"],
                                   [58.395, 57.12, 57.375], rtol=1e-6)

    def test_explicit_normalization_wins(self, tmp_path):
        make_kerashub_preset(tmp_path, KERASHUB_TINY["v1_basic"])
        model = DilatedKerasHubResNetBackbone.from_preset(
            str(tmp_path), input_normalization={"mean": 0, "std": 1})
        assert model.input_normalization == {"mean": [0.0] * 3, "std": [1.0] * 3}

    def test_not_a_resnet_preset(self, tmp_path):
        keras_hub.models.VGGBackbone(stackwise_num_repeats=[1], stackwise_num_filters=[4],
                                     image_shape=(None, None, 3)).save_to_preset(str(tmp_path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no image converter
            with pytest.raises(ValueError, match="VGGBackbone, not a KerasHub ResNetBackbone"):
                DilatedKerasHubResNetBackbone.from_preset(str(tmp_path))

    def test_offline_preset_says_what_to_download(self, monkeypatch):
        def offline(preset, **kwargs):
            raise ConnectionError("Failed to resolve 'api.kaggle.com'")

        monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
        with pytest.raises(WeightsNotAvailableError) as info:
            DilatedKerasHubResNetBackbone.from_preset("resnet_101_imagenet")
        message = str(info.value)
        assert "Failed to resolve" in message
        assert ("keras_hub.models.Backbone.from_preset('resnet_101_imagenet')"
                ".save_to_preset('resnet_101_imagenet')") in message
        assert "ImageConverter.from_preset('resnet_101_imagenet')" in message

    @pytest.mark.parametrize("kwargs, match", [
        (dict(block_type="bottleneck"), "block_type"),
        (dict(block_type="bottleneck_block_vd", use_pre_activation=True), "not a valid layout"),
        (dict(stackwise_num_blocks=[1, 1, 1]), "4 entries"),
        (dict(input_conv_kernel_sizes=[7, 3]), "same length"),
        (dict(data_format="channels_first"), "channels_last"),
        (dict(output_stride=4), "output_stride"),
        (dict(output_stride=32, multi_grid=(2, 1)), "strided conv cannot also be dilated"),
        (dict(input_normalization={"mean": 0, "std": 0}), "positive"),
        (dict(input_normalization={"mean": [1, 2], "std": 1}), "3 numbers"),
    ])
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises((ValueError, TypeError), match=match):
            DilatedKerasHubResNetBackbone(**{**KERASHUB_TINY["v1_bottleneck"], **kwargs})

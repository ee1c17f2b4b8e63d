import json
import math
import os

import keras
import numpy as np
import pytest
from keras_cv.models import ResNetBackbone, ResNetV2Backbone

from keras_segattn import backbones
from keras_segattn.backbones import resnet
from keras_segattn import convert
from keras_segattn.backbones import (
    DilatedResNetBackbone,
    DilatedResNetV1cBackbone,
    DilatedResNetV2Backbone,
    WeightsNotAvailableError,
    backbone_config,
    dilation_plan,
    get_backbone,
    stage_channels,
    stage_outputs,
)
from keras_segattn.testing import TestCase

H, W = 65, 49  # odd sizes: every stride rounds up (ceil), as with "same" padding
TINY = dict(stackwise_filters=[8, 16, 32, 64], stackwise_strides=[1, 2, 2, 2],
            include_rescaling=False)
# Basic blocks: KerasCV's stage 1 has an identity shortcut on the 64-channel stem.
BASIC = dict(stackwise_filters=[64, 16, 32, 64], stackwise_strides=[1, 2, 2, 2],
             include_rescaling=False, block_type="basic_block")


def _touch(path):
    path.write_bytes(b"")
    return str(path)


def _image(batch=1):
    return np.random.RandomState(0).uniform(-1, 1, (batch, H, W, 3)).astype("float32")


def _rates(model):
    """{conv name: (stride, dilation)} of every Conv2D."""
    return {
        layer.name: (layer.strides[0], layer.dilation_rate[0])
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    }


def _layer_table(model, weighted_only=False):
    return [
        (layer.name, type(layer).__name__, [tuple(w.shape) for w in layer.weights])
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and (layer.weights or not weighted_only)
    ]


class TestFeatureStrides(TestCase):
    @pytest.mark.parametrize("name", ["resnet_tiny", "resnet_tiny_v2"])
    @pytest.mark.parametrize("output_stride", [8, 16, 32])
    def test_stage_shapes(self, name, output_stride):
        backbone = get_backbone(name, output_stride=output_stride)
        assert isinstance(backbone, ResNetV2Backbone if name.endswith("v2") else ResNetBackbone)
        assert backbone.include_rescaling is False
        features = keras.Model(backbone.input, stage_outputs(backbone))(_image())
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
        rates = _rates(get_backbone("resnet_tiny", output_stride=8))
        assert rates["v2_stack_1_block1_1_conv"] == (2, 1)  # stage 2 keeps its stride
        assert rates["v2_stack_2_block1_0_conv"] == (1, 1)
        assert rates["v2_stack_2_block1_1_conv"] == (1, 1)
        assert rates["v2_stack_2_block1_2_conv"] == (1, 2)
        assert rates["v2_stack_3_block1_0_conv"] == (1, 1)
        assert rates["v2_stack_3_block1_1_conv"] == (1, 1)
        assert rates["v2_stack_3_block1_2_conv"] == (1, 4)
        rates = _rates(get_backbone("resnet_tiny", output_stride=16))
        assert rates["v2_stack_2_block1_1_conv"] == (2, 1)
        assert rates["v2_stack_2_block1_2_conv"] == (1, 1)
        assert rates["v2_stack_3_block1_1_conv"] == (1, 1)
        assert rates["v2_stack_3_block1_2_conv"] == (1, 2)
        rates = _rates(get_backbone("resnet_tiny", output_stride=32))
        assert all(d == 1 for _, d in rates.values())

    def test_resnet50_plan(self):
        # Pure-Python plan of the real resnet50 (no build): stage 3 rate 2, stage 4 rate 4.
        plan = dilation_plan(1, "block", [3, 4, 6, 3], [1, 2, 2, 2], 8)
        assert [[step[0] for step in stage] for stage in plan] == [
            [1, 1, 1], [2, 1, 1, 1], [1] * 6, [1] * 3]
        assert [{step[2] for step in stage} for stage in plan] == [{1}, {1}, {2}, {4}]
        plan = dilation_plan(1, "block", [3, 4, 23, 3], [1, 2, 2, 2], 8, multi_grid=(1, 2, 4))
        assert [step[2] for step in plan[3]] == [4, 8, 16]
        assert {step[2] for step in plan[2]} == {2}

    def test_v1_basic_block(self):
        model = DilatedResNetBackbone(**BASIC, stackwise_blocks=[1, 1, 1, 2], output_stride=8)
        rates = _rates(model)
        # The conv that carried the stride keeps the previous rate (torchvision rule).
        assert rates["v2_stack_2_block1_1_conv"] == (1, 1)
        assert rates["v2_stack_2_block1_2_conv"] == (1, 2)
        assert rates["v2_stack_3_block1_1_conv"] == (1, 2)
        assert rates["v2_stack_3_block1_2_conv"] == (1, 4)
        assert rates["v2_stack_3_block2_1_conv"] == (1, 4)
        assert model.stackwise_dilations == [1, 1, 2, 4]
        plain = ResNetBackbone(**BASIC, stackwise_blocks=[1, 1, 1, 2])
        assert _layer_table(model) == _layer_table(plain)

    def test_v2_os8_os16(self):
        # KerasCV V2 puts the stride in the LAST block of a stage, so stage 3 already runs at
        # stride 8 until its last conv: only stage 4 needs dilation at OS8.
        model = get_backbone("resnet_tiny_v2", output_stride=8)
        rates = _rates(model)
        assert rates["v2_stack_1_block2_2_conv"] == (2, 1)
        assert rates["v2_stack_2_block1_2_conv"] == (1, 1)
        assert rates["v2_stack_2_block2_2_conv"] == (1, 1)
        assert rates["v2_stack_3_block1_2_conv"] == (1, 2)
        assert rates["v2_stack_3_block2_2_conv"] == (1, 2)
        assert model.stackwise_dilations == [1, 1, 1, 2]
        rates = _rates(get_backbone("resnet_tiny_v2", output_stride=16))
        assert rates["v2_stack_2_block2_2_conv"] == (2, 1)
        assert rates["v2_stack_3_block2_2_conv"] == (1, 1)  # only the final stride removed
        assert all(d == 1 for _, d in rates.values())

    def test_multi_grid(self):
        rates = _rates(get_backbone("resnet_tiny_v2", output_stride=8, multi_grid=(1, 2, 4)))
        assert rates["v2_stack_3_block1_2_conv"] == (1, 2)
        assert rates["v2_stack_3_block2_2_conv"] == (1, 4)
        assert rates["v2_stack_2_block1_2_conv"] == (1, 1)
        model = DilatedResNetBackbone(
            **TINY, stackwise_blocks=[1, 1, 1, 3], output_stride=8, multi_grid=[1, 2, 4]
        )
        rates = _rates(model)
        assert [rates[f"v2_stack_3_block{i}_2_conv"][1] for i in (1, 2, 3)] == [4, 8, 16]
        assert rates["v2_stack_2_block1_2_conv"] == (1, 2)
        assert model.get_config()["multi_grid"] == [1, 2, 4]
        # Cycled over the blocks when shorter (DANet's multi_dilation[i % len]).
        plan = dilation_plan(1, "block", [1, 1, 1, 3], [1, 2, 2, 2], 16, multi_grid=(1, 2))
        assert [step[2] for step in plan[3]] == [2, 4, 2]


class TestKerasCVCompatibility(TestCase):
    @pytest.mark.parametrize("output_stride", [8, 32])
    def test_v1_layers_identical(self, output_stride):
        model = DilatedResNetBackbone(**TINY, stackwise_blocks=[1, 1, 2, 1],
                                      output_stride=output_stride)
        plain = ResNetBackbone(**TINY, stackwise_blocks=[1, 1, 2, 1])
        assert _layer_table(model) == _layer_table(plain)
        assert model.pyramid_level_inputs == plain.pyramid_level_inputs
        if output_stride == 32:  # same graph: same outputs with the same weights
            model.set_weights(plain.get_weights())
            self.assertAllClose(model(_image()), plain(_image()), atol=1e-5, rtol=1e-5)

    def test_v2_layers_identical(self):
        plain = ResNetV2Backbone(**TINY, stackwise_blocks=[2, 2, 2, 2])
        undilated = DilatedResNetV2Backbone(**TINY, stackwise_blocks=[2, 2, 2, 2])
        assert _layer_table(undilated) == _layer_table(plain)
        undilated.set_weights(plain.get_weights())
        self.assertAllClose(undilated(_image()), plain(_image()), atol=1e-5, rtol=1e-5)
        # Dilated: the weightless 1x1 max-pool shortcuts of removed strides disappear.
        dilated = DilatedResNetV2Backbone(**TINY, stackwise_blocks=[2, 2, 2, 2], output_stride=8)
        assert _layer_table(dilated, True) == _layer_table(plain, True)
        assert dilated.pyramid_level_inputs == plain.pyramid_level_inputs

    def test_load_weights_from_undilated_kerascv(self, tmp_path):
        plain = ResNetBackbone(**TINY, stackwise_blocks=[1, 1, 1, 1])
        path = str(tmp_path / "plain.weights.h5")
        plain.save_weights(path)
        model = get_backbone("resnet_tiny", output_stride=8, weights=path)
        for a, b in zip(model.get_weights(), plain.get_weights()):
            np.testing.assert_array_equal(a, b)
        # KerasCV preset directory (config.json + model.weights.h5).
        from keras_cv.src.utils.preset_utils import save_to_preset

        plain_v2 = ResNetV2Backbone(**TINY, stackwise_blocks=[2, 2, 2, 2])
        preset = str(tmp_path / "preset_v2")
        save_to_preset(plain_v2, preset)
        model_v2 = get_backbone("resnet_tiny_v2", output_stride=8, weights=preset)
        for a, b in zip(model_v2.get_weights(), plain_v2.get_weights()):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(ValueError, match="same depth|V1"):
            get_backbone("resnet_tiny", weights=preset)


class TestSerialization(TestCase):
    @pytest.mark.parametrize("name", ["resnet_tiny", "resnet_tiny_v2"])
    def test_round_trip(self, name):
        model = get_backbone(name, output_stride=8, multi_grid=(1, 2), input_shape=(None, None, 3))
        config = backbone_config(model)
        json.dumps(config)
        revived = get_backbone(config)
        assert type(revived) is type(model)
        assert revived.get_config() == model.get_config()
        assert _rates(revived) == _rates(model)
        revived.set_weights(model.get_weights())
        self.assertAllClose(revived(_image()), model(_image()), atol=1e-5, rtol=1e-5)

    def test_keras_file_round_trip(self):
        model = get_backbone("resnet_tiny", output_stride=8, multi_grid=(1, 2))
        restored = self.run_model_saving_test(model, _image(), atol=1e-5, rtol=1e-5)
        assert restored.output_stride == 8 and restored.multi_grid == [1, 2]
        assert _rates(restored) == _rates(model)
        assert restored.pyramid_level_inputs == model.pyramid_level_inputs


class TestErrors(TestCase):
    def test_bad_name(self):
        with pytest.raises(ValueError, match="resnet50_v2.*resnet_tiny"):
            get_backbone("resnet51")
        with pytest.raises(TypeError):
            get_backbone(3)

    @pytest.mark.parametrize("output_stride", [4, 7, 64, "8", True])
    def test_bad_output_stride(self, output_stride):
        with pytest.raises(ValueError, match="output_stride"):
            get_backbone("resnet_tiny", output_stride=output_stride)

    @pytest.mark.parametrize("multi_grid", [(), (1, 0), "124", (1.5, 2)])
    def test_bad_multi_grid(self, multi_grid):
        with pytest.raises(ValueError, match="multi_grid"):
            get_backbone("resnet_tiny", multi_grid=multi_grid)

    def test_imagenet_offline(self, monkeypatch):
        calls = []

        def offline(handle, filename):
            calls.append(handle)
            raise ConnectionError("Failed to resolve 'api.kaggle.com'")

        monkeypatch.setattr(resnet, "_preset_file", offline)
        # The loader is called directly so no full-size ResNet-50 is built in a fast test.
        with pytest.raises(WeightsNotAvailableError, match=r"weights='/path/resnet50\.weights\.h5'"):
            resnet._load_imagenet(None, "resnet50", resnet.BACKBONE_SPECS["resnet50"])
        assert calls == ["kaggle://keras/resnetv1/keras/resnet50_imagenet/2"]
        with pytest.raises(WeightsNotAvailableError, match="backbone_weights=path"):
            resnet._load_imagenet(None, "resnet50_v2", resnet.BACKBONE_SPECS["resnet50_v2"])

    def test_imagenet_unavailable_for_depth(self):
        with pytest.raises(ValueError, match="only available"):
            get_backbone("resnet_tiny", weights="imagenet")

    def test_missing_and_bad_weights_file(self, tmp_path):
        missing = str(tmp_path / "nope.weights.h5")
        with pytest.raises(FileNotFoundError, match="nope.weights.h5"):
            get_backbone("resnet_tiny", weights=missing)
        bad = tmp_path / "bad.weights.h5"
        bad.write_bytes(b"not an h5 file")
        with pytest.raises(ValueError, match="bad.weights.h5"):
            get_backbone("resnet_tiny", weights=str(bad))
        other = str(tmp_path / "v2.weights.h5")
        ResNetV2Backbone(**TINY, stackwise_blocks=[2, 2, 2, 2]).save_weights(other)
        with pytest.raises(ValueError, match="v2.weights.h5"):
            get_backbone("resnet_tiny", weights=other)
        with pytest.raises(FileNotFoundError, match="model.weights.h5"):
            get_backbone("resnet_tiny", weights=str(tmp_path))  # directory without weights
        with pytest.raises(ValueError, match="weights.npz"):
            get_backbone("resnet_tiny", weights=_touch(tmp_path / "weights.npz"))

    def test_backbone_instance(self):
        plain = ResNetBackbone(**TINY, stackwise_blocks=[1, 1, 1, 1])
        assert get_backbone(plain) is plain
        assert stage_channels(plain)["stage4"] == 256
        not_a_backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 1)])
        with pytest.raises(ValueError, match="pyramid_level_inputs"):
            get_backbone(not_a_backbone)
        with pytest.raises(ValueError, match="unchanged"):
            get_backbone(plain, weights="imagenet")

    def test_v2_rejects_kerascv_dilations(self):
        with pytest.raises(ValueError, match="output_stride"):
            DilatedResNetV2Backbone(**TINY, stackwise_blocks=[2, 2, 2, 2],
                                    stackwise_dilations=[1, 1, 2, 4])
        with pytest.raises(ValueError, match="at least 2 blocks"):
            DilatedResNetV2Backbone(**TINY, stackwise_blocks=[1, 1, 1, 1])


# ---------------------------------------------------------------------------------------------
# mmsegmentation ResNetV1c
# ---------------------------------------------------------------------------------------------
# Tiny V1c configs (bottleneck = the registered "resnet_tiny_v1c"). The stem (16) differs from
# the first stage's width, so stage 1 has a downsample shortcut for both block types.
TINY_V1C = dict(stackwise_filters=[8, 16, 32, 64], stackwise_blocks=[1, 1, 2, 2],
                stackwise_strides=[1, 2, 2, 2], stem_channels=16)
# One odd and one even side: PyTorch's symmetric padding and TF's "same" differ on even sizes
# only (30 -> 15 -> 8 -> 4 and 47 -> 24 -> 12 -> 6 hit both parities at each stride).
V1C_H, V1C_W = 30, 47


def _torch_reference():
    pytest.importorskip("torch")
    import torch_mmseg_reference

    return torch_mmseg_reference


def _v1c(block_type="block", output_stride=8, **kwargs):
    return DilatedResNetV1cBackbone(**TINY_V1C, block_type=block_type,
                                    output_stride=output_stride, **kwargs)


def _torch_v1c(ref, block_type="block", output_stride=8, **kwargs):
    return ref.ResNetV1c(block=block_type, stage_blocks=TINY_V1C["stackwise_blocks"],
                         base_channels=8, stem_channels=16, **ref.d8_config(output_stride),
                         **kwargs)


def _conv_geometry(model):
    """{mmseg module path: (stride, dilation)} of every Conv2D (layer name with "." for "_")."""
    return {
        layer.name.replace("_", "."): (layer.strides[0], layer.dilation_rate[0])
        for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
    }


def _torch_conv_geometry(module):
    import torch

    return {
        name: (m.stride[0], m.dilation[0])
        for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)
    }


class TestResNetV1c(TestCase):
    @pytest.mark.parametrize("block_type", ["block", "basic_block"])
    @pytest.mark.parametrize("output_stride", [8, 16])
    def test_matches_mmseg_reference(self, block_type, output_stride):
        # Independent torch ResNetV1c with mmseg's module structure, random weights and BN
        # statistics, eval mode; ported by state-dict key; all four stages compared.
        ref = _torch_reference()
        reference = ref.randomize(_torch_v1c(ref, block_type, output_stride), seed=1)
        model = _v1c(block_type, output_stride)
        assert _conv_geometry(model) == _torch_conv_geometry(reference)
        state = ref.state_dict_numpy(reference)
        assert sorted(model.reference_weight_mapping()) == sorted(state)
        convert.load_reference_weights(model, state)
        x = np.random.RandomState(0).normal(size=(1, V1C_H, V1C_W, 3)).astype("float32")
        expected = ref.run_nchw(reference, x)
        features = keras.Model(model.input, stage_outputs(model))(x)
        for i, want in enumerate(expected):
            got = features[f"stage{i + 1}"]
            assert tuple(got.shape) == want.shape, (i, got.shape, want.shape)
            self.assertAllClose(got, want, atol=1e-4, rtol=1e-4, msg=f"stage{i + 1}")

    def test_dilation_rates(self):
        rates = _rates(get_backbone("resnet_tiny_v1c", output_stride=8))
        assert rates["stem_0"] == (2, 1) and rates["stem_3"] == (1, 1)
        assert rates["layer2_0_conv1"] == (1, 1)  # style="pytorch": stride on the 3x3 conv
        assert rates["layer2_0_conv2"] == (2, 1)
        assert rates["layer2_0_downsample_0"] == (2, 1)
        # contract_dilation: the first block of a dilated stage uses half the rate.
        assert rates["layer3_0_conv2"] == (1, 1) and rates["layer3_1_conv2"] == (1, 2)
        assert rates["layer4_0_conv2"] == (1, 2) and rates["layer4_1_conv2"] == (1, 4)
        assert rates["layer4_0_downsample_0"] == (1, 1)
        assert all(rates[n][1] == 1 for n in rates if n.endswith(("conv1", "conv3")))
        rates = _rates(get_backbone("resnet_tiny_v1c", output_stride=16))
        assert rates["layer3_0_conv2"] == (2, 1) and rates["layer3_1_conv2"] == (1, 1)
        assert rates["layer4_0_conv2"] == (1, 1) and rates["layer4_1_conv2"] == (1, 2)
        rates = _rates(get_backbone("resnet_tiny_v1c", output_stride=32))
        assert all(d == 1 for _, d in rates.values())
        # Without contraction (mmseg contract_dilation=False): the full rate everywhere.
        model = _v1c(contract_dilation=False)
        rates = _rates(model)
        assert rates["layer3_0_conv2"] == (1, 2) and rates["layer4_0_conv2"] == (1, 4)
        assert model.stackwise_dilations == [1, 1, 2, 4]
        # Multi-grid multiplies the last stage's rate; that stage is not contracted.
        rates = _rates(get_backbone("resnet_tiny_v1c", output_stride=8, multi_grid=(1, 2)))
        assert rates["layer4_0_conv2"] == (1, 4) and rates["layer4_1_conv2"] == (1, 8)
        assert rates["layer3_0_conv2"] == (1, 1)
        # Basic blocks: conv1 carries stride and dilation, conv2 is never dilated (mmseg).
        rates = _rates(_v1c("basic_block"))
        assert rates["layer3_0_conv1"] == (1, 1) and rates["layer3_1_conv1"] == (1, 2)
        assert rates["layer4_0_conv1"] == (1, 2) and rates["layer4_1_conv1"] == (1, 4)
        assert all(rates[n] == (1, 1) for n in rates if n.endswith("conv2"))

    def test_dilation_matches_mmseg_contract_dilation(self):
        # Our plan vs the torch reference's ResLayer (mmseg's contract_dilation) for the real
        # depths, without building Keras models.
        ref = _torch_reference()
        import torch

        for depth, (block_type, blocks) in resnet._DEPTHS.items():
            for output_stride in (8, 16):
                with torch.device("meta"):  # structure only: no memory, no init
                    reference = ref.ResNetV1c(block_type, blocks, **ref.d8_config(output_stride))
                geometry = _torch_conv_geometry(reference)
                conv = "conv2" if block_type == "block" else "conv1"
                rates = resnet.v1c_block_rates(block_type, blocks, [1, 2, 2, 2], output_stride)
                for stage, stage_rates in enumerate(rates):
                    for block, step in enumerate(stage_rates):
                        key = f"layer{stage + 1}.{block}.{conv}"
                        assert geometry[key] == step, (depth, output_stride, key)

    def test_resnet50_v1c_parameters_equal_mmseg(self):
        # Exact counts of the torch ResNetV1c-50 (= mmseg's: same modules); same keys/shapes.
        ref = _torch_reference()
        import torch

        with torch.device("meta"):  # structure only: no memory, no init
            reference = ref.ResNetV1c("block", (3, 4, 6, 3), **ref.d8_config(8))
        trainable = sum(p.numel() for p in reference.parameters())
        buffers = sum(b.numel() for n, b in reference.named_buffers()
                      if not n.endswith("num_batches_tracked"))
        model = get_backbone("resnet50_v1c", output_stride=8)
        assert trainable == 23_527_264
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable
        assert model.count_params() == trainable + buffers == 23_580_512
        assert _conv_geometry(model) == _torch_conv_geometry(reference)
        state = reference.state_dict()
        mapping = model.reference_weight_mapping()
        assert sorted(mapping) == sorted(k for k in state if "num_batches" not in k)
        for key, (variable, layout) in mapping.items():
            shape = tuple(state[key].shape)
            if layout == "conv":
                shape = shape[2:] + shape[1::-1]
            assert tuple(variable.shape) == shape, key
        assert stage_channels(model) == {"stage1": 256, "stage2": 512, "stage3": 1024,
                                         "stage4": 2048}

    @pytest.mark.parametrize("output_stride", [8, 16, 32])
    def test_stage_shapes(self, output_stride):
        backbone = get_backbone("resnet_tiny_v1c", output_stride=output_stride)
        assert isinstance(backbone, DilatedResNetV1cBackbone)
        features = keras.Model(backbone.input, stage_outputs(backbone)).compute_output_spec(
            keras.KerasTensor((1, H, W, 3)))
        strides = [4, 8, min(16, output_stride), min(32, output_stride)]
        for i, (stride, ch) in enumerate(zip(strides, [32, 64, 128, 256])):
            shape = tuple(features[f"stage{i + 1}"].shape)
            assert shape == (1, math.ceil(H / stride), math.ceil(W / stride), ch), (i, shape)

    def test_serialization_and_weights_file(self, tmp_path):
        model = _v1c(output_stride=16, multi_grid=(1, 2), contract_dilation=False)
        config = backbone_config(model)
        json.dumps(config)
        revived = get_backbone(config)
        assert type(revived) is DilatedResNetV1cBackbone
        assert revived.get_config() == model.get_config()
        assert revived.get_config()["stem_channels"] == 16
        assert revived.contract_dilation is False
        assert _rates(revived) == _rates(model)
        path = str(tmp_path / "v1c.weights.h5")
        tiny = get_backbone("resnet_tiny_v1c")
        tiny.save_weights(path)
        loaded = get_backbone("resnet_tiny_v1c", output_stride=8, weights=path)
        for a, b in zip(loaded.get_weights(), tiny.get_weights()):
            np.testing.assert_array_equal(a, b)

    def test_errors(self):
        with pytest.raises(ValueError, match="load_reference_weights"):
            get_backbone("resnet50_v1c", weights="imagenet")  # raises before building
        with pytest.raises(ValueError, match="strided conv cannot also be dilated"):
            get_backbone("resnet_tiny_v1c", output_stride=32, multi_grid=(2, 1))
        with pytest.raises(ValueError, match="stem_channels"):
            DilatedResNetV1cBackbone(**{**TINY_V1C, "stem_channels": 7})
        with pytest.raises(ValueError, match="block_type"):
            _v1c("bottleneck")


@pytest.mark.large
class TestFullSize(TestCase):
    @pytest.mark.parametrize(
        "name,params",
        [("resnet50", 23561152), ("resnet101", 42605504),
         ("resnet50_v2", 23564800), ("resnet101_v2", 42626560)],
    )
    def test_param_counts(self, name, params):
        # KerasCV preset metadata counts (include_rescaling does not change them).
        model = get_backbone(name, output_stride=8)
        assert model.count_params() == params
        assert stage_channels(model) == {"stage1": 256, "stage2": 512, "stage3": 1024,
                                         "stage4": 2048}

    def test_imagenet_network(self):
        # Real download when online; offline it must fail fast with the explanatory error.
        try:
            model = get_backbone("resnet50", weights="imagenet")
        except WeightsNotAvailableError as error:
            assert "weights=" in str(error)
        else:
            assert model.count_params() == 23561152


def test_public_names():
    assert set(backbones.BACKBONE_NAMES) >= {
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet18_v2",
        "resnet50_v2", "resnet101_v2", "resnet152_v2", "resnet_tiny", "resnet_tiny_v2",
        "resnet18_v1c", "resnet34_v1c", "resnet50_v1c", "resnet101_v1c", "resnet152_v1c",
        "resnet_tiny_v1c"}
    assert os.path.basename(resnet.__file__) == "resnet.py"

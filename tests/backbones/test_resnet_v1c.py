"""mmsegmentation's ResNetV1c: parity with a torch reference, mmcv ImageNet checkpoints
(with ``fc.*``, no prefix) through load_reference_weights, and their download."""

import functools
import hashlib
import http.server
import json
import math
import os
import threading

import keras
import numpy as np
import pytest

from backbone_checks import H, W, conv_geometry
from keras_segattn import convert
from keras_segattn.backbones import (
    DilatedResNetV1cBackbone, WeightsNotAvailableError, backbone_config, factory, get_backbone,
    stage_channels, stage_outputs,
)
from keras_segattn.backbones.resnet_v1c import v1c_block_rates
from keras_segattn.testing import TestCase

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


def _mmseg_geometry(model):
    """{mmseg module path: (stride, dilation)} of every Conv2D (layer name with "." for "_")."""
    return {name.replace("_", "."): value for name, value in conv_geometry(model).items()}


def _torch_conv_geometry(module):
    import torch

    return {
        name: (m.stride[0], m.dilation[0])
        for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)
    }


def _compare_with_reference(test, model, reference, ref):
    x = np.random.RandomState(0).normal(size=(1, V1C_H, V1C_W, 3)).astype("float32")
    expected = ref.run_nchw(reference, x)
    features = keras.Model(model.input, stage_outputs(model))(x)
    for i, want in enumerate(expected):
        got = features[f"stage{i + 1}"]
        assert tuple(got.shape) == want.shape, (i, got.shape, want.shape)
        test.assertAllClose(got, want, atol=1e-4, rtol=1e-4, msg=f"stage{i + 1}")


class TestResNetV1c(TestCase):
    @pytest.mark.parametrize("block_type", ["block", "basic_block"])
    @pytest.mark.parametrize("output_stride", [8, 16])
    def test_matches_mmseg_reference(self, block_type, output_stride):
        # Independent torch ResNetV1c with mmseg's module structure, random weights and BN
        # statistics, eval mode; ported by state-dict key; all four stages compared.
        ref = _torch_reference()
        reference = ref.randomize(_torch_v1c(ref, block_type, output_stride), seed=1)
        model = _v1c(block_type, output_stride)
        assert _mmseg_geometry(model) == _torch_conv_geometry(reference)
        state = ref.state_dict_numpy(reference)
        assert sorted(model.reference_weight_mapping()) == sorted(state)
        convert.load_reference_weights(model, state)
        _compare_with_reference(self, model, reference, ref)

    def test_imagenet_checkpoint_with_classifier(self, tmp_path):
        # mmcv's ImageNet checkpoints (open-mmlab://resnet50_v1c ...) are standalone state dicts
        # with the classifier fc.*: they load through load_reference_weights, fc ignored.
        ref = _torch_reference()
        import torch

        reference = ref.randomize(_torch_v1c(ref, "block", 8), seed=2)
        state = {**reference.state_dict(), "fc.weight": torch.zeros(1000, 256),
                 "fc.bias": torch.zeros(1000)}
        path = str(tmp_path / "resnet_tiny_v1c-00000000.pth")
        torch.save(state, path)
        model = get_backbone("resnet_tiny_v1c", output_stride=8)
        convert.load_reference_weights(model, path)
        _compare_with_reference(self, model, reference, ref)
        again = get_backbone("resnet_tiny_v1c", output_stride=8, weights=path)
        _compare_with_reference(self, again, reference, ref)
        # Other keys are still refused.
        with pytest.raises(ValueError, match="unexpected keys: head.weight"):
            convert.load_reference_weights(model, {**state, "head.weight": torch.zeros(1)})

    def test_backbone_part_of_a_segmentor_checkpoint(self, tmp_path):
        ref = _torch_reference()
        import torch

        reference = ref.randomize(_torch_v1c(ref, "block", 8), seed=3)
        state = {f"backbone.{k}": v for k, v in reference.state_dict().items()}
        state["decode_head.conv_seg.weight"] = torch.zeros(3, 8, 1, 1)
        path = str(tmp_path / "segmentor.pth")
        torch.save({"state_dict": state, "meta": {}}, path)
        model = get_backbone("resnet_tiny_v1c", output_stride=8, weights=path)
        _compare_with_reference(self, model, reference, ref)

    def test_dilation_rates(self):
        rates = conv_geometry(get_backbone("resnet_tiny_v1c", output_stride=8))
        assert rates["stem_0"] == (2, 1) and rates["stem_3"] == (1, 1)
        assert rates["layer2_0_conv1"] == (1, 1)  # style="pytorch": stride on the 3x3 conv
        assert rates["layer2_0_conv2"] == (2, 1)
        assert rates["layer2_0_downsample_0"] == (2, 1)
        # contract_dilation: the first block of a dilated stage uses half the rate.
        assert rates["layer3_0_conv2"] == (1, 1) and rates["layer3_1_conv2"] == (1, 2)
        assert rates["layer4_0_conv2"] == (1, 2) and rates["layer4_1_conv2"] == (1, 4)
        assert rates["layer4_0_downsample_0"] == (1, 1)
        assert all(rates[n][1] == 1 for n in rates if n.endswith(("conv1", "conv3")))
        rates = conv_geometry(get_backbone("resnet_tiny_v1c", output_stride=16))
        assert rates["layer3_0_conv2"] == (2, 1) and rates["layer3_1_conv2"] == (1, 1)
        assert rates["layer4_0_conv2"] == (1, 1) and rates["layer4_1_conv2"] == (1, 2)
        rates = conv_geometry(get_backbone("resnet_tiny_v1c", output_stride=32))
        assert all(d == 1 for _, d in rates.values())
        # Without contraction (mmseg contract_dilation=False): the full rate everywhere.
        model = _v1c(contract_dilation=False)
        rates = conv_geometry(model)
        assert rates["layer3_0_conv2"] == (1, 2) and rates["layer4_0_conv2"] == (1, 4)
        assert model.stackwise_dilations == [1, 1, 2, 4]
        # Multi-grid multiplies the last stage's rate; that stage is not contracted.
        rates = conv_geometry(get_backbone("resnet_tiny_v1c", output_stride=8,
                                           multi_grid=(1, 2)))
        assert rates["layer4_0_conv2"] == (1, 4) and rates["layer4_1_conv2"] == (1, 8)
        assert rates["layer3_0_conv2"] == (1, 1)
        # Basic blocks: conv1 carries stride and dilation, conv2 is never dilated (mmseg).
        rates = conv_geometry(_v1c("basic_block"))
        assert rates["layer3_0_conv1"] == (1, 1) and rates["layer3_1_conv1"] == (1, 2)
        assert rates["layer4_0_conv1"] == (1, 2) and rates["layer4_1_conv1"] == (1, 4)
        assert all(rates[n] == (1, 1) for n in rates if n.endswith("conv2"))

    def test_dilation_matches_mmseg_contract_dilation(self):
        # Our plan vs the torch reference's ResLayer (mmseg's contract_dilation) for the real
        # depths, without building Keras models.
        ref = _torch_reference()
        import torch

        for name in ("resnet18_v1c", "resnet34_v1c", "resnet50_v1c", "resnet101_v1c",
                     "resnet152_v1c"):
            spec = factory.BACKBONE_SPECS[name][1]
            block_type, blocks = spec["block_type"], spec["stackwise_blocks"]
            for output_stride in (8, 16):
                with torch.device("meta"):  # structure only: no memory, no init
                    reference = ref.ResNetV1c(block_type, blocks, **ref.d8_config(output_stride))
                geometry = _torch_conv_geometry(reference)
                conv = "conv2" if block_type == "block" else "conv1"
                rates = v1c_block_rates(block_type, blocks, [1, 2, 2, 2], output_stride)
                for stage, stage_rates in enumerate(rates):
                    for block, step in enumerate(stage_rates):
                        key = f"layer{stage + 1}.{block}.{conv}"
                        assert geometry[key] == step, (name, output_stride, key)

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
        assert _mmseg_geometry(model) == _torch_conv_geometry(reference)
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
        revived = get_backbone(config, output_stride=16)
        assert type(revived) is DilatedResNetV1cBackbone
        assert revived.get_config() == model.get_config()
        assert revived.get_config()["stem_channels"] == 16
        assert revived.contract_dilation is False
        assert conv_geometry(revived) == conv_geometry(model)
        path = str(tmp_path / "v1c.weights.h5")
        tiny = get_backbone("resnet_tiny_v1c")
        tiny.save_weights(path)
        loaded = get_backbone("resnet_tiny_v1c", output_stride=8, weights=path)
        for a, b in zip(loaded.get_weights(), tiny.get_weights()):
            np.testing.assert_array_equal(a, b)

    def test_errors(self):
        with pytest.raises(ValueError, match="not available for 'resnet152_v1c'"):
            get_backbone("resnet152_v1c", weights="imagenet")  # raises before building
        with pytest.raises(ValueError, match="strided conv cannot also be dilated"):
            get_backbone("resnet_tiny_v1c", output_stride=32, multi_grid=(2, 1))
        with pytest.raises(ValueError, match="stem_channels"):
            DilatedResNetV1cBackbone(**{**TINY_V1C, "stem_channels": 7})
        with pytest.raises(ValueError, match="block_type"):
            _v1c("bottleneck")
        with pytest.raises(ValueError, match="include_rescaling must be False"):
            _v1c(include_rescaling=True)


# ---------------------------------------------------------------------------------------------
# weights="imagenet": download once from the mmcv model zoo (a local HTTP server here)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (directory, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class TestImageNetDownload(TestCase):
    def test_download_verify_cache(self, served, tmp_path, monkeypatch):
        ref = _torch_reference()
        import torch

        www, base = served
        reference = ref.randomize(_torch_v1c(ref, "block", 8), seed=4)
        staging = tmp_path / "staging.pth"
        torch.save({**reference.state_dict(), "fc.weight": torch.zeros(10, 256),
                    "fc.bias": torch.zeros(10)}, str(staging))
        digest = hashlib.sha256(staging.read_bytes()).hexdigest()
        filename = f"resnet_tiny_v1c-{digest[:8]}.pth"
        os.replace(staging, www / filename)
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
        monkeypatch.setitem(factory.IMAGENET_WEIGHTS, "resnet_tiny_v1c", base + filename)

        model = get_backbone("resnet_tiny_v1c", output_stride=8, weights="imagenet")
        _compare_with_reference(self, model, reference, ref)
        cached = tmp_path / "keras_home" / "keras_segattn" / filename
        assert cached.exists()
        # Second load: from the cache, with the server's copy gone.
        (www / filename).unlink()
        again = get_backbone("resnet_tiny_v1c", output_stride=16, weights="imagenet")
        _compare_with_reference(self, get_backbone(again, output_stride=8), reference, ref)

    def test_hash_mismatch_deletes_the_file(self, served, tmp_path, monkeypatch):
        www, base = served
        (www / "resnet_tiny_v1c-deadbeef.pth").write_bytes(b"not the right file")
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
        monkeypatch.setitem(factory.IMAGENET_WEIGHTS, "resnet_tiny_v1c",
                            base + "resnet_tiny_v1c-deadbeef.pth")
        with pytest.raises(ValueError, match=r"does not match the expected prefix deadbeef"):
            get_backbone("resnet_tiny_v1c", weights="imagenet")
        assert not (tmp_path / "keras_home" / "keras_segattn" / "resnet_tiny_v1c-deadbeef.pth"
                    ).exists()

    def test_offline_says_where_to_put_the_file(self, tmp_path, monkeypatch):
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
        url = "http://127.0.0.1:9/resnet_tiny_v1c-12345678.pth"  # port 9: nothing listens
        monkeypatch.setitem(factory.IMAGENET_WEIGHTS, "resnet_tiny_v1c", url)
        expected_path = os.path.join(str(tmp_path / "keras_home"), "keras_segattn",
                                     "resnet_tiny_v1c-12345678.pth")
        with pytest.raises(WeightsNotAvailableError) as info:
            get_backbone("resnet_tiny_v1c", weights="imagenet")
        assert url in str(info.value) and f"put it at {expected_path}" in str(info.value)
        assert not os.path.exists(expected_path)

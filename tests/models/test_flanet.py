import os

import keras
import numpy as np
import pytest

from keras_segattn import convert

from keras_segattn.models import FLANet
from keras_segattn.heads import FLANetHead, FLANetOutput
from keras_segattn.testing import TestCase

from model_checks import (
    TINY, check_invalid_arguments, check_mixed_precision_and_registry, check_model_contract,
)

SMALL = dict(channels=16, aux_channels=8)
GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")


def _fully_state(torch, channels):
    """State dict of an official FullyAttentionalBlock(channels): Linear conv1/conv2, gamma,
    conv = Sequential(Conv2d 3x3 no bias, BN, ReLU)."""
    block = torch.nn.Module()
    block.conv1 = torch.nn.Linear(channels, channels)
    block.conv2 = torch.nn.Linear(channels, channels)
    block.conv = torch.nn.Sequential(
        torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(channels), torch.nn.ReLU(),
    )
    block.gamma = torch.nn.Parameter(torch.zeros(1))
    return block.state_dict()


class TestFLANet(TestCase):
    def test_heads(self):
        x = np.random.rand(1, 5, 4, 12).astype("float32")
        for layer, shape in ((FLANetOutput(3, mid_channels=8), (1, 10, 8, 3)),
                             (FLANetHead(3, channels=8, activation="leaky_relu"), (1, 10, 8, 3))):
            assert tuple(layer(x).shape) == shape
            revived = keras.saving.deserialize_keras_object(
                keras.saving.serialize_keras_object(layer))
            assert type(revived) is type(layer) and revived.get_config() == layer.get_config()

    def test_contract(self):
        model = FLANet(5, backbone=TINY, **SMALL)
        check_model_contract(model, ["aux_stage2", "aux_stage3", "logits"], 5,
                             loss_weights={"logits": 1.0, "aux_stage2": 0.4, "aux_stage3": 0.4})

    def test_mixed_precision_and_registry(self):
        check_mixed_precision_and_registry("flanet", FLANet, 5, backbone=TINY, aux_head=False,
                                           activation="leaky_relu", **SMALL)

    def test_invalid_arguments(self):
        check_invalid_arguments(FLANet)


def _torch_flanet_output(torch, in_channels, mid, num_classes):
    """The official FLANetOutput layout (model.py @52af4fd): Upsample(x2, nearest), Conv2d
    3x3 no bias, BN, ReLU, Dropout2d, Conv2d 1x1 with bias, as ``conv``."""
    module = torch.nn.Module()
    module.conv = torch.nn.Sequential(
        torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(in_channels, mid, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(mid), torch.nn.ReLU(), torch.nn.Dropout2d(0.1),
        torch.nn.Conv2d(mid, num_classes, 1, bias=True),
    )
    return module


def _randomize(torch, module, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if "num_batches" in name:
                continue
            values = torch.randn(tensor.shape, generator=generator) * 0.3
            if name.endswith("running_var"):
                values = values.abs() + 0.5
            tensor.copy_(values)
    return module.eval()


class TestFLANetReferenceWeights(TestCase):
    def test_flanet_output_matches_the_official_layout(self):
        torch = pytest.importorskip("torch")
        reference = _randomize(torch, _torch_flanet_output(torch, 6, 8, 3), seed=0)
        x = np.random.default_rng(0).normal(size=(2, 5, 4, 6)).astype("float32")
        with torch.no_grad():
            expected = reference.conv(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        layer = FLANetOutput(3, mid_channels=8)
        layer(x)
        convert.load_reference_weights(layer, reference.state_dict())
        self.assertAllClose(layer(x, training=False), expected, atol=1e-4, rtol=1e-4)

    def test_flanet_head_keys_are_the_official_ones(self):
        torch = pytest.importorskip("torch")
        in_channels, channels, num_classes = 12, 8, 3
        official = torch.nn.Module()  # the head part of the official FLANet module
        official.conv = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(channels), torch.nn.ReLU(),
            torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(channels), torch.nn.ReLU(),
        )
        official.conv_out1 = _torch_flanet_output(torch, in_channels + channels, channels, num_classes)
        state = dict(official.state_dict())
        golden = np.load(os.path.join(GOLDEN, "flanet_fa.npz"))  # FullyAttentionalBlock keys
        fully = {k[len("param/"):]: golden[k] for k in golden.files if k.startswith("param/")}
        x = np.random.default_rng(1).normal(size=(1, 6, 5, in_channels)).astype("float32")
        head = FLANetHead(num_classes, channels=channels)
        head(x)
        # The golden FA block has 16 channels: only compare the key set for it.
        expected_keys = {k for k in state if "num_batches" not in k}
        expected_keys |= {f"fully.{k}" for k in fully if "num_batches" not in k}
        assert set(head.reference_weight_mapping()) == expected_keys
        state.update({f"fully.{k}": v for k, v in _fully_state(torch, channels).items()})
        convert.load_reference_weights(head, state)  # shapes fit the official layout

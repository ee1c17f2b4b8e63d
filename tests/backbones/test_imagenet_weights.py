"""The real ImageNet weights (large: they need the network; ~0.1-0.25 GB each).

Each test builds the dilated OS8 backbone (or DANet) with ``weights="imagenet"`` from the
KerasHub presets / mmcv model zoo and checks that the weights are the preset's (our OS32
graph equals KerasHub's own backbone on the same input) and that the normalisation is the
preset's image converter. Offline they fail with ``WeightsNotAvailableError``, whose message
says what to download.
"""

import keras
import keras_hub
import numpy as np
import pytest

from backbone_checks import assert_same_outputs

from keras_segattn import models
from keras_segattn.backbones import IMAGENET_WEIGHTS, get_backbone, input_normalization

pytestmark = pytest.mark.large

KERASHUB_NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet50_v2",
                  "resnet101_v2", "resnet18_vd", "resnet34_vd", "resnet50_vd", "resnet101_vd",
                  "resnet152_vd"]


@pytest.mark.parametrize("name", KERASHUB_NAMES)
def test_kerashub_imagenet(name):
    preset = IMAGENET_WEIGHTS[name]
    reference = keras_hub.models.Backbone.from_preset(preset)
    plain = get_backbone(name, output_stride=32, weights="imagenet")
    x = np.random.RandomState(0).uniform(0, 1, (1, 97, 81, 3)).astype("float32")
    assert_same_outputs(plain(x), reference(x))
    converter = keras_hub.layers.ImageConverter.from_preset(preset)
    np.testing.assert_allclose(input_normalization(plain)["std"],
                               1.0 / np.broadcast_to(converter.scale, (3,)), rtol=1e-6)


@pytest.mark.parametrize("name", ["resnet50", "resnet101", "resnet152", "resnet50_vd",
                                  "resnet101_vd", "resnet152_vd"])
def test_danet_imagenet(name):
    model = models.DANet(num_classes=19, backbone=name, backbone_weights="imagenet")
    assert model.backbone.output_stride == 8
    spec = model.compute_output_spec(keras.KerasTensor((1, 97, 129, 3)))
    assert tuple(spec["logits"].shape) == (1, 97, 129, 19)


@pytest.mark.parametrize("name", ["resnet18_v1c", "resnet50_v1c", "resnet101_v1c"])
def test_mmcv_v1c_imagenet(name):
    backbone = get_backbone(name, output_stride=8, weights="imagenet")
    assert backbone.output_stride == 8

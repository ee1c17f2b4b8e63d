"""Backbones passed in: ResNets rebuilt dilated with their weights and exactly one input
normalisation; other pyramid backbones accepted at their own stride, or a clear error."""

import re
import warnings

import keras
import keras_hub
import numpy as np
import pytest

from backbone_checks import (
    KERASHUB_TINY, assert_same_outputs, assert_same_weights, conv_geometry, image, randomize,
    weights_by_name,
)
from keras_segattn import models
from keras_segattn.backbones import (
    IMAGENET_NORMALIZATION, NO_NORMALIZATION, UNIT_SCALING, DilatedKerasHubResNetBackbone,
    DilatedResNetBackbone, DilatedResNetV1cBackbone, DilatedResNetV2Backbone, PyramidBackbone,
    get_backbone, input_normalization, pyramid_outputs,
)
from keras_segattn.layers import ImageNormalization
from keras_segattn.testing import TestCase

TINY_CV = dict(stackwise_filters=[8, 16, 32, 64], stackwise_strides=[1, 2, 2, 2],
               input_shape=(None, None, 3))


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _p5_shape(model, size=64):
    features = keras.Model(model.input, pyramid_outputs(model))
    return tuple(features.compute_output_spec(keras.KerasTensor((1, size, size, 3)))["P5"].shape)


def _tiny_mit(size=64):
    # KerasHub's MiT needs a fixed square input; it names its stride 4..32 outputs P1..P4.
    return keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1, 1, 1], num_layers=4, layerwise_num_heads=[1, 1, 1, 1],
        layerwise_sr_ratios=[4, 2, 1, 1], max_drop_path_rate=0.0,
        layerwise_patch_sizes=[7, 3, 3, 3], layerwise_strides=[4, 2, 2, 2],
        hidden_dims=[8, 16, 16, 32], image_shape=(size, size, 3))


@pytest.fixture
def keras_cv():
    return pytest.importorskip("keras_cv")  # an optional dependency; the `test` extra has it


class TestKerasCVInstances(TestCase):
    def test_the_issue_example(self, keras_cv):
        # The issue's example: a KerasCV ResNet with its own rescaling, output_stride=16.
        bb = keras_cv.models.ResNetBackbone(
            stackwise_filters=[16, 32, 64, 128], stackwise_blocks=[1, 1, 1, 1],
            stackwise_strides=[1, 2, 2, 2], include_rescaling=True, input_shape=(None, None, 3))
        model = models.DANet(num_classes=4, backbone=bb, output_stride=16)
        backbone = model.backbone
        assert type(backbone) is DilatedResNetBackbone and backbone.output_stride == 16
        assert _p5_shape(backbone) == (1, 4, 4, 512)  # stride 16 on a 64-pixel input
        assert_same_weights(backbone, bb)
        # Exactly one normalisation: the model's x / 255, no Rescaling layer left.
        normalize = model.get_layer("normalize")
        assert list(normalize.mean) == [0.0] * 3 and list(normalize.std) == [255.0] * 3
        assert not any(isinstance(layer, keras.layers.Rescaling) for layer in backbone.layers)
        assert backbone.get_config()["input_normalization"] == UNIT_SCALING

    def test_same_features_as_the_instance(self, keras_cv):
        # At OS32 the rebuilt backbone after the model's normalisation computes what the
        # KerasCV instance computes on raw pixels (its own Rescaling).
        bb = randomize(keras_cv.models.ResNetBackbone(**TINY_CV, stackwise_blocks=[1, 1, 1, 1],
                                                      include_rescaling=True))
        ours = get_backbone(bb, output_stride=32)
        x = image(scale=255.0)
        normalized = ImageNormalization(**input_normalization(ours))(x)
        np.testing.assert_allclose(_np(ours(normalized)), _np(bb(x)), atol=1e-5, rtol=1e-5)

    def test_v2_instance_and_rates(self, keras_cv):
        bb = keras_cv.models.ResNetV2Backbone(**TINY_CV, stackwise_blocks=[2, 2, 2, 2],
                                              include_rescaling=False)
        ours = get_backbone(bb, output_stride=8)
        assert type(ours) is DilatedResNetV2Backbone and ours.stackwise_dilations == [1, 1, 1, 2]
        assert_same_weights(ours, bb)
        assert ours.input_normalization is None  # KerasCV without rescaling: ImageNet stats
        assert input_normalization(ours)["mean"] == tuple(IMAGENET_NORMALIZATION["mean"])


class TestKerasHubAndOwnInstances(TestCase):
    def test_kerashub_resnet_instance(self):
        bb = randomize(keras_hub.models.ResNetBackbone(**KERASHUB_TINY["v1_bottleneck"]))
        dilated = get_backbone(bb, output_stride=8)
        assert type(dilated) is DilatedKerasHubResNetBackbone and dilated.output_stride == 8
        assert conv_geometry(dilated)["stack3_block1_2_conv"] == (1, 4)
        assert_same_weights(dilated, bb)
        plain = get_backbone(bb, output_stride=32)
        assert_same_outputs(plain(image()), bb(image()))
        # A KerasHub preset's image converter can be given for the instance.
        converter = keras_hub.layers.ResNetImageConverter(scale=1 / 255.0)
        scaled = get_backbone(bb, output_stride=16, input_normalization=converter)
        assert scaled.input_normalization == UNIT_SCALING and scaled.output_stride == 16

    def test_own_instances_rebuilt_only_when_needed(self):
        tiny = get_backbone("resnet_tiny", output_stride=8)
        assert get_backbone(tiny, output_stride=8) is tiny
        assert get_backbone(tiny, output_stride=None) is tiny
        os16 = get_backbone(tiny, output_stride=16)
        assert os16 is not tiny and os16.output_stride == 16 and os16.name == "resnet_tiny_os16"
        assert weights_by_name(os16).keys() == weights_by_name(tiny).keys()
        v1c = get_backbone("resnet_tiny_v1c", output_stride=8)
        v1c16 = get_backbone(v1c, output_stride=16, multi_grid=(1, 2))
        assert type(v1c16) is DilatedResNetV1cBackbone and v1c16.multi_grid == [1, 2]
        assert_same_weights(v1c16, v1c)
        assert conv_geometry(v1c16)["layer4_1_conv2"] == (1, 4)

    def test_instance_with_weights_is_refused(self):
        with pytest.raises(ValueError, match="keeps the weights of a backbone instance"):
            get_backbone(get_backbone("resnet_tiny"), weights="imagenet")


class TestOtherPyramidBackbones(TestCase):
    def test_mit_under_ccnet(self, tmp_path):
        mit = _tiny_mit()
        backbone = get_backbone(mit, output_stride=32)
        assert type(backbone) is PyramidBackbone and backbone.output_stride == 32
        shapes = {k: tuple(v.shape) for k, v in pyramid_outputs(backbone).items()}
        assert shapes == {"P2": (None, 16, 16, 8), "P3": (None, 8, 8, 16),
                          "P4": (None, 4, 4, 16), "P5": (None, 2, 2, 32)}
        model = models.CCNet(num_classes=3, backbone=mit, output_stride=32,
                             input_shape=(64, 64, 3))
        x = image(height=64, width=64, scale=255.0)
        assert tuple(model(x)["logits"].shape) == (1, 64, 64, 3)
        # The wrapped MiT shares the instance's weights and round-trips as a nested object.
        assert_same_weights(model.backbone.backbone, mit)
        path = str(tmp_path / "backbone.keras")
        backbone.save(path)
        restored = keras.models.load_model(path)
        assert type(restored) is PyramidBackbone and restored.output_stride == 32
        assert type(restored.backbone) is keras_hub.models.MiTBackbone
        np.testing.assert_allclose(_np(restored(x)), _np(backbone(x)), atol=1e-5, rtol=1e-5)

    def test_impossible_output_stride(self):
        mit = _tiny_mit()
        with pytest.raises(ValueError, match=(
                r"backbone 'mi_t_backbone.*' \(MiTBackbone\) has output stride 32 and cannot "
                r"be dilated to output_stride=8.*output_stride=None")):
            models.DANet(num_classes=3, backbone=mit, input_shape=(64, 64, 3))
        with pytest.raises(ValueError, match="multi_grid"):
            get_backbone(mit, output_stride=32, multi_grid=(1, 2))

    def test_fixed_size_backbone_needs_its_size(self):
        # MiT is built for its image_shape; a model at another (or any) size is refused in
        # one line before its call fails inside the backbone.
        mit = _tiny_mit()
        for shape in ((None, None, 3), (None, 64, 3), (64, 32, 3)):
            with pytest.raises(ValueError, match=(
                    r"^backbone 'mi_t_backbone.*' \(MiTBackbone\) takes images of one size, "
                    r"input shape \(64, 64, 3\); build the model with input_shape=\(64, 64, 3\) "
                    rf"\(got input_shape={re.escape(str(shape))}\)\.$")):
                models.CCNet(num_classes=3, backbone=mit, output_stride=32, input_shape=shape)
        # Attention to Scale runs the backbone on resized images: at one scale only.
        with pytest.raises(ValueError, match=(
                r"^AttentionToScale runs the backbone on the images scaled by \(1\.0, 0\.5\), "
                r"but this backbone takes images of one size, \(64, 64\): use a backbone that "
                r"takes any size, or scales=\(1\.0,\)\.$")):
            models.AttentionToScale(3, backbone=mit, output_stride=32, input_shape=(64, 64, 3),
                                    scales=(1.0, 0.5), channels=8, attention_channels=8)
        model = models.AttentionToScale(3, backbone=mit, output_stride=32,
                                        input_shape=(64, 64, 3), scales=(1.0,), channels=8,
                                        attention_channels=8)
        x = image(height=64, width=64, scale=255.0)
        assert tuple(model(x)["logits"].shape) == (1, 64, 64, 3)

    def test_opt_in_runs_at_the_backbones_stride(self):
        mit = _tiny_mit()
        with pytest.warns(UserWarning, match="runs at its own output stride 32"):
            model = models.DANet(num_classes=3, backbone=mit, output_stride=None,
                                 input_shape=(64, 64, 3))
        assert model.backbone.output_stride == 32
        assert model.get_config()["output_stride"] is None

    def test_functional_dict_model_with_its_own_rescaling(self):
        inputs = keras.Input((None, None, 3))
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        features = {}
        for level in range(2, 6):
            x = keras.layers.Conv2D(4 * level, 3, strides=4 if level == 2 else 2,
                                    padding="same")(x)
            features[f"P{level}"] = x
        functional = keras.Model(inputs, features, name="my_backbone")
        backbone = get_backbone(functional, output_stride=32)
        assert backbone.input_normalization == NO_NORMALIZATION
        model = models.FCN(num_classes=2, backbone=functional, output_stride=32, channels=4,
                           aux_channels=4)
        assert list(model.get_layer("normalize").std) == [1.0] * 3
        spec = model.compute_output_spec(keras.KerasTensor((1, 40, 40, 3)))
        assert tuple(spec["logits"].shape) == (1, 40, 40, 2)

    def test_not_a_pyramid_backbone(self):
        plain = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)])
        with pytest.raises(ValueError, match=r"must expose the pyramid levels.*missing"):
            get_backbone(plain, output_stride=32)
        inputs = keras.Input((None, None, 3))
        outputs = {f"P{i}": keras.layers.Conv2D(2, 1)(inputs) for i in range(2, 4)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ValueError, match="both have stride 1"):
                get_backbone(keras.Model(inputs, outputs), output_stride=32)

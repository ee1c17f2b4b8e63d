"""get_backbone: names, ImageNet sources, weights from presets and files, offline errors."""

import keras
import keras_hub
import pytest

from backbone_checks import (
    CONVERTER_NORMALIZATION, assert_same_weights, conv_geometry, make_kerashub_preset, randomize,
)
from keras_segattn import backbones, models
from keras_segattn.backbones import (
    BACKBONE_NAMES, BACKBONE_SPECS, IMAGENET_WEIGHTS, DilatedKerasHubResNetBackbone,
    WeightsNotAvailableError, get_backbone, input_normalization,
)
from keras_segattn.testing import TestCase

OLD_NAMES = {  # the names of the KerasCV-based release: all still build
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet18_v2",
    "resnet50_v2", "resnet101_v2", "resnet152_v2", "resnet_tiny", "resnet_tiny_v2",
    "resnet18_v1c", "resnet34_v1c", "resnet50_v1c", "resnet101_v1c", "resnet152_v1c",
    "resnet_tiny_v1c"}


def test_names_and_imagenet_sources():
    assert set(BACKBONE_NAMES) >= OLD_NAMES
    for depth in (18, 34, 50, 101, 152):
        assert {f"resnet{depth}", f"resnet{depth}_vd", f"resnet{depth}_v2"} <= set(BACKBONE_NAMES)
        # ImageNet weights at every depth of V1 and vd through KerasHub.
        assert IMAGENET_WEIGHTS[f"resnet{depth}"] in keras_hub.models.ResNetBackbone.presets or (
            IMAGENET_WEIGHTS[f"resnet{depth}"] == "hf://timm/resnet34.a1_in1k")
        assert IMAGENET_WEIGHTS[f"resnet{depth}_vd"] in keras_hub.models.ResNetBackbone.presets
    for depth in (50, 101):
        assert IMAGENET_WEIGHTS[f"resnet{depth}_v2"] in keras_hub.models.ResNetBackbone.presets
    assert set(IMAGENET_WEIGHTS) <= set(BACKBONE_NAMES)
    # The KerasHub presets' parameter counts (KerasHub metadata, backbone only) are ours.
    presets = keras_hub.models.ResNetBackbone.presets
    assert presets["resnet_101_imagenet"]["metadata"]["params"] == 42_605_504


class TestNames(TestCase):
    def test_default_is_kerashub_v1_at_os8(self):
        backbone = get_backbone("resnet50")
        assert isinstance(backbone, DilatedKerasHubResNetBackbone)
        assert backbone.output_stride == 8 and backbone.stackwise_dilations == [1, 1, 2, 4]
        assert backbone.count_params() == 23_561_152  # = KerasHub resnet_50_imagenet metadata
        assert backbones.stage_channels(backbone) == {
            "stage1": 256, "stage2": 512, "stage3": 1024, "stage4": 2048}
        assert input_normalization(backbone) == {
            "mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375)}

    def test_output_stride_none_is_the_plain_network(self):
        backbone = get_backbone("resnet_tiny", output_stride=None)
        assert backbone.output_stride == 32

    def test_bad_names_and_arguments(self):
        with pytest.raises(ValueError, match=r"did you mean resnet50.*resnet_tiny_v1c"):
            get_backbone("resnet51")
        with pytest.raises(TypeError, match="got int"):
            get_backbone(3)
        for output_stride in (4, 7, 64, "8", True):
            with pytest.raises(ValueError, match="output_stride must be one of"):
                get_backbone("resnet_tiny", output_stride=output_stride)
        for multi_grid in ((), (1, 0), "124", (1.5, 2)):
            with pytest.raises(ValueError, match="multi_grid"):
                get_backbone("resnet_tiny", multi_grid=multi_grid)
        with pytest.raises(TypeError, match="got int"):
            get_backbone("resnet_tiny", weights=3)
        with pytest.raises(TypeError, match="input_normalization must be a dict"):
            get_backbone("resnet_tiny", input_normalization=(0, 1))

    def test_imagenet_refused_before_building(self):
        with pytest.raises(ValueError, match="not available for 'resnet18_v2'.*resnet101_vd"):
            get_backbone("resnet18_v2", weights="imagenet")
        with pytest.raises(ValueError, match="not available for 'resnet_tiny'"):
            get_backbone("resnet_tiny", weights="imagenet")

    def test_missing_weights(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nope.weights.h5"):
            get_backbone("resnet_tiny", weights=str(tmp_path / "nope.weights.h5"))
        with pytest.raises(FileNotFoundError, match="not a KerasHub preset name"):
            get_backbone("resnet18", weights="resnet_18_imagenett")
        with pytest.raises(FileNotFoundError, match="neither a config.json"):
            get_backbone("resnet_tiny", weights=str(tmp_path))


class TestImageNetOffline(TestCase):
    def test_kerashub_preset_offline(self, monkeypatch):
        calls = []

        def offline(preset, **kwargs):
            calls.append(preset)
            raise ConnectionError("Failed to resolve 'api.kaggle.com'")

        monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
        with pytest.raises(WeightsNotAvailableError,
                           match="save_to_preset\\('resnet_101_imagenet'"):
            get_backbone("resnet101", weights="imagenet")
        with pytest.raises(WeightsNotAvailableError, match="resnet34.a1_in1k"):
            models.DANet(num_classes=19, backbone="resnet34", backbone_weights="imagenet")
        with pytest.raises(WeightsNotAvailableError, match="resnet_vd_152_imagenet"):
            get_backbone("resnet152_vd", weights="imagenet")
        assert calls == ["resnet_101_imagenet", "hf://timm/resnet34.a1_in1k",
                         "resnet_vd_152_imagenet"]


# A full-size preset is ~0.2 GB on disk; one per module, shared by the tests below.
@pytest.fixture(scope="module")
def resnet101_preset(tmp_path_factory):
    directory = tmp_path_factory.mktemp("resnet_101_preset")
    source = make_kerashub_preset(directory, BACKBONE_SPECS["resnet101"][1])
    return str(directory), source


class TestLocalPresets(TestCase):
    def test_danet_resnet101_from_a_local_preset(self, resnet101_preset):
        # The headline: DANet-R101 at OS8 with a KerasHub ImageNet-style preset, offline.
        directory, source = resnet101_preset
        model = models.DANet(num_classes=19, backbone="resnet101", backbone_weights=directory)
        backbone = model.backbone
        assert isinstance(backbone, DilatedKerasHubResNetBackbone)
        assert backbone.output_stride == 8 and backbone.layout() == BACKBONE_SPECS["resnet101"][1]
        assert_same_weights(backbone, source)
        rates = conv_geometry(backbone)
        assert rates["stack2_block1_2_conv"] == (1, 2) and rates["stack3_block1_2_conv"] == (1, 4)
        # The preset's image converter is the model's normalisation, and survives get_config.
        normalize = model.get_layer("normalize")
        assert list(normalize.mean) == CONVERTER_NORMALIZATION["mean"]
        assert list(normalize.std) == CONVERTER_NORMALIZATION["std"]
        config = model.get_config()
        assert config["backbone"]["config"]["input_normalization"] == CONVERTER_NORMALIZATION
        spec = model.compute_output_spec(keras.KerasTensor((1, 64, 64, 3)))
        assert tuple(spec["logits"].shape) == (1, 64, 64, 19)
        features = keras.Model(backbone.input, backbones.pyramid_outputs(backbone))
        p5 = features.compute_output_spec(keras.KerasTensor((1, 64, 64, 3)))["P5"]
        assert tuple(p5.shape) == (1, 8, 8, 2048)

    def test_preset_of_another_depth(self, resnet101_preset):
        with pytest.raises(ValueError,
                           match=r"different ResNet than 'resnet50'.*stackwise_num_blocks"):
            get_backbone("resnet50", weights=resnet101_preset[0])
        with pytest.raises(ValueError, match="different ResNet than 'resnet101_vd'"):
            get_backbone("resnet101_vd", weights=resnet101_preset[0])

    @pytest.mark.parametrize("name", ["resnet50_vd"])
    def test_vd_from_a_local_preset(self, name, tmp_path):
        source = make_kerashub_preset(tmp_path, BACKBONE_SPECS[name][1], converter=None)
        with pytest.warns(UserWarning, match="no image converter; assuming ImageNet"):
            backbone = get_backbone(name, output_stride=16, weights=str(tmp_path))
        assert backbone.output_stride == 16
        assert_same_weights(backbone, source)
        assert backbone.input_normalization == backbones.IMAGENET_NORMALIZATION

    def test_weights_file_of_a_kerashub_resnet(self, tmp_path):
        # A .weights.h5 saved from KerasHub's own ResNet-18 loads into the dilated graph
        # (Keras matches layers by class and order: the file check compares them first).
        source = randomize(keras_hub.models.ResNetBackbone(**BACKBONE_SPECS["resnet18"][1]))
        path = str(tmp_path / "r18.weights.h5")
        source.save_weights(path)
        backbone = get_backbone("resnet18", output_stride=8, weights=path,
                                input_normalization={"mean": 0, "std": 255})
        assert_same_weights(backbone, source)
        assert backbone.input_normalization == backbones.UNIT_SCALING
        with pytest.raises(ValueError, match="r18.weights.h5"):
            get_backbone("resnet34", weights=path)


@pytest.mark.large
class TestEveryDepthFromLocalPresets(TestCase):
    """The other depths and layouts of the headline test, offline (~10 s each on CPU)."""

    @pytest.mark.parametrize("name", ["resnet50", "resnet152", "resnet101_vd", "resnet152_vd",
                                      "resnet50_v2", "resnet101_v2", "resnet34", "resnet18_vd"])
    def test_danet_from_a_local_preset(self, name, tmp_path):
        source = make_kerashub_preset(tmp_path, BACKBONE_SPECS[name][1])
        model = models.DANet(num_classes=19, backbone=name, backbone_weights=str(tmp_path))
        assert model.backbone.output_stride == 8
        assert model.backbone.layout() == BACKBONE_SPECS[name][1]
        assert_same_weights(model.backbone, source)
        assert list(model.get_layer("normalize").std) == CONVERTER_NORMALIZATION["std"]

"""The backbone contract (pyramid_outputs, input_normalization) and the dilation plans."""

import keras
import keras_hub
import numpy as np
import pytest

from keras_segattn.backbones import (
    IMAGENET_NORMALIZATION, block_rates, dilation_plan, feature_strides, input_normalization,
    normalization_from_converter, pyramid_outputs,
)
from keras_segattn.backbones.pyramid import check_normalization
from keras_segattn.layers import ImageNormalization


def _functional(strides, keys, size=None):
    inputs = keras.Input((size, size, 3))
    x, outputs = inputs, {}
    for key, stride in zip(keys, strides):
        x = keras.layers.Conv2D(2, 1, strides=stride)(x)
        outputs[key] = x
    return keras.Model(inputs, outputs)


class TestPyramidOutputs:
    def test_dict_output_with_p_keys(self):
        model = _functional([4, 2, 2, 2], ["P2", "P3", "P4", "P5"])
        levels = pyramid_outputs(model)
        assert list(levels) == ["P2", "P3", "P4", "P5"]
        assert pyramid_outputs(model, levels=("P4",)) == {"P4": levels["P4"]}

    def test_levels_named_by_measured_stride(self):
        # MiT-style keys P1..P4 at strides 4..32 become P2..P5; a fixed input size is used.
        model = _functional([4, 2, 2, 2], ["P1", "P2", "P3", "P4"], size=96)
        strides = feature_strides(model, model.output)
        assert strides == {"P1": 4, "P2": 8, "P3": 16, "P4": 32}
        levels = pyramid_outputs(model)
        assert levels["P2"] is model.output["P1"] and levels["P5"] is model.output["P4"]

    def test_pyramid_level_inputs(self):
        model = _functional([4, 2, 2, 2], ["a", "b", "c", "d"])
        model.pyramid_level_inputs = {f"P{i + 2}": layer.name
                                      for i, layer in enumerate(model.layers[1:])}
        assert list(pyramid_outputs(model)) == ["P2", "P3", "P4", "P5"]
        model.pyramid_level_inputs = {"P2": "nope", "P3": "x", "P4": "y", "P5": "z"}
        with pytest.raises(ValueError, match="name no layer of the model"):
            pyramid_outputs(model)

    def test_errors(self):
        with pytest.raises(ValueError, match="stride 3, not a power of two"):
            pyramid_outputs(_functional([3, 2, 2, 2], ["a", "b", "c", "d"], size=96))
        with pytest.raises(ValueError, match=r"missing \['P5'\]"):
            pyramid_outputs(_functional([4, 2, 2], ["P2", "P3", "P4"]))


class TestNormalization:
    def test_converter_to_pixel_units(self):
        converter = keras_hub.layers.ImageConverter(
            scale=[1 / (255 * 0.229), 1 / (255 * 0.224), 1 / (255 * 0.225)],
            offset=[-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])
        normalization = normalization_from_converter(converter)
        np.testing.assert_allclose(normalization["mean"], IMAGENET_NORMALIZATION["mean"], rtol=1e-6)
        np.testing.assert_allclose(normalization["std"], IMAGENET_NORMALIZATION["std"], rtol=1e-6)
        # ImageNormalization with it computes what the converter computes.
        x = np.random.RandomState(0).uniform(0, 255, (1, 4, 5, 3)).astype("float32")
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ImageNormalization(**normalization)(x)),
            keras.ops.convert_to_numpy(converter(x)), atol=1e-5)
        assert normalization_from_converter(keras_hub.layers.ImageConverter(scale=1 / 255)) == {
            "mean": [0.0] * 3, "std": [255.0] * 3}
        assert normalization_from_converter(keras_hub.layers.ImageConverter()) == {
            "mean": [0.0] * 3, "std": [1.0] * 3}

    def test_declared_or_default(self):
        model = _functional([4, 2, 2, 2], ["P2", "P3", "P4", "P5"])
        assert input_normalization(model) == {"mean": (123.675, 116.28, 103.53),
                                              "std": (58.395, 57.12, 57.375)}
        model.input_normalization = {"mean": 0, "std": [1, 2, 3]}
        assert input_normalization(model) == {"mean": (0.0, 0.0, 0.0), "std": (1.0, 2.0, 3.0)}

    @pytest.mark.parametrize("value, error, match", [
        ({"mean": 0}, TypeError, "must be a dict"),
        ({"mean": 0, "std": -1}, ValueError, "positive"),
        ({"mean": "abc", "std": 1}, ValueError, "mean must be a number or 3 numbers"),
        ({"mean": float("nan"), "std": 1}, ValueError, "3 numbers"),
    ])
    def test_bad_values(self, value, error, match):
        with pytest.raises(error, match=match):
            check_normalization(value)


class TestDilationPlans:
    def test_resnet50_plan_kerascv_v1(self):
        # Pure-Python plan of the real resnet50 (no build): stage 3 rate 2, stage 4 rate 4.
        plan = dilation_plan(1, "block", [3, 4, 6, 3], [1, 2, 2, 2], 8)
        assert [[step[0] for step in stage] for stage in plan] == [
            [1, 1, 1], [2, 1, 1, 1], [1] * 6, [1] * 3]
        assert [{step[2] for step in stage} for stage in plan] == [{1}, {1}, {2}, {4}]
        plan = dilation_plan(1, "block", [3, 4, 23, 3], [1, 2, 2, 2], 8, multi_grid=(1, 2, 4))
        assert [step[2] for step in plan[3]] == [4, 8, 16]
        # Cycled over the blocks when shorter (DANet's multi_dilation[i % len]).
        plan = dilation_plan(1, "block", [1, 1, 1, 3], [1, 2, 2, 2], 16, multi_grid=(1, 2))
        assert [step[2] for step in plan[3]] == [2, 4, 2]

    def test_block_rates(self):
        # Stride on the first block's 3x3 conv (KerasHub, mmseg V1c): contract_dilation.
        rates = block_rates([3, 4, 6, 3], [1, 2, 2, 2], 8)
        assert rates[2] == [(1, 1, 2)] + [(1, 2, 2)] * 5
        assert rates[3] == [(1, 2, 4), (1, 4, 4), (1, 4, 4)]
        assert rates[1][0] == (2, 1, 1)
        assert block_rates([3, 4, 6, 3], [1, 2, 2, 2], 8, contract_dilation=False)[3][0] == (
            1, 4, 4)
        assert [r[1] for r in block_rates([3, 4, 6, 3], [1, 2, 2, 2], 8, (1, 2, 4))[3]] == [
            4, 8, 16]
        with pytest.raises(ValueError, match="strided conv cannot also be dilated"):
            block_rates([3, 4, 6, 3], [1, 2, 2, 2], 32, (2, 1))

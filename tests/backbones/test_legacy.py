"""Saved models of the KerasCV-based release load unchanged (class, config, weights, outputs).

``data/*.keras`` were written by ``data/make_legacy_models.py`` with keras_segattn at git
commit b3c5c9e (before the KerasHub backbones), on TensorFlow: an FCN on ``resnet_tiny`` and
small ``DilatedResNetV2Backbone`` / ``DilatedResNetV1cBackbone`` backbones (OS8, multi-grid).
"""

import os
import warnings

import keras
import numpy as np
import pytest

from keras_segattn.backbones import (
    DilatedResNetBackbone, DilatedResNetV1cBackbone, DilatedResNetV2Backbone, input_normalization,
)
from keras_segattn.testing import TestCase

DATA = os.path.join(os.path.dirname(__file__), "data")


def _load(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a weight that does not load is only a Keras warning
        return keras.models.load_model(os.path.join(DATA, name))


class TestLegacyModels(TestCase):
    def test_fcn_on_resnet_tiny(self):
        expected = np.load(os.path.join(DATA, "legacy_outputs.npz"))
        model = _load("fcn_resnet_tiny.keras")
        assert type(model.backbone) is DilatedResNetBackbone
        assert model.backbone.output_stride == 8
        assert input_normalization(model.backbone)["std"] == (58.395, 57.12, 57.375)
        logits = keras.ops.convert_to_numpy(model(expected["input"])["logits"])
        np.testing.assert_allclose(logits, expected["fcn_resnet_tiny"], atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("name, cls", [("resnet_v2_small", DilatedResNetV2Backbone),
                                           ("resnet_v1c_small", DilatedResNetV1cBackbone)])
    def test_backbones(self, name, cls):
        expected = np.load(os.path.join(DATA, "legacy_outputs.npz"))
        backbone = _load(f"{name}.keras")
        assert type(backbone) is cls and backbone.multi_grid == [1, 2]
        out = keras.ops.convert_to_numpy(backbone(expected["input"] / 255.0))
        np.testing.assert_allclose(out, expected[name], atol=1e-5, rtol=1e-5)

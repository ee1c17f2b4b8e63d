"""Writes the saved models of ``test_legacy.py`` with keras_segattn as it was before the KerasHub
backbones (git commit b3c5c9e, KerasCV-based backbones): run from a checkout of that commit,
``KERAS_BACKEND=tensorflow python make_legacy_models.py OUTPUT_DIR``."""

import os
import sys

import keras
import numpy as np

from keras_segattn import backbones, models

out = sys.argv[1]
keras.utils.set_random_seed(0)
x = np.random.RandomState(0).uniform(0, 255, (1, 37, 45, 3)).astype("float32")
expected = {"input": x}
model = models.FCN(num_classes=3, backbone="resnet_tiny", channels=8, aux_channels=8)
model.save(os.path.join(out, "fcn_resnet_tiny.keras"))
expected["fcn_resnet_tiny"] = keras.ops.convert_to_numpy(model(x)["logits"])
small = dict(stackwise_filters=[2, 4, 4, 8], stackwise_strides=[1, 2, 2, 2], output_stride=8,
             multi_grid=(1, 2))
for name, backbone in [
    ("resnet_v2_small", backbones.DilatedResNetV2Backbone(
        **small, stackwise_blocks=[2, 2, 2, 2], include_rescaling=False)),
    ("resnet_v1c_small", backbones.DilatedResNetV1cBackbone(
        **small, stackwise_blocks=[1, 1, 2, 2], stem_channels=4)),
]:
    backbone.save(os.path.join(out, f"{name}.keras"))
    expected[name] = keras.ops.convert_to_numpy(backbone(x / 255.0))
np.savez(os.path.join(out, "legacy_outputs.npz"), **expected)

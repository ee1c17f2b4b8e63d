"""Shared helpers of the backbone tests: tiny layouts, conv geometry, offline KerasHub presets."""

import os

import keras
import keras_hub
import numpy as np

H, W = 65, 49  # odd sizes: every stride rounds up (ceil)

# Tiny KerasHub layouts (KerasHub's ResNetBackbone wants 64 filters in its first stage).
_TINY_STACKS = dict(stackwise_num_filters=[64, 8, 8, 16], stackwise_num_blocks=[1, 1, 1, 2],
                    stackwise_num_strides=[1, 2, 2, 2])
_V1_STEM = dict(input_conv_filters=[16], input_conv_kernel_sizes=[7])
# KerasHub's plain basic blocks start with an identity shortcut: the stem must give 64 channels.
_BASIC_STEM = dict(input_conv_filters=[64], input_conv_kernel_sizes=[7])
_VD_STEM = dict(input_conv_filters=[8, 8, 16], input_conv_kernel_sizes=[3, 3, 3])
KERASHUB_TINY = {
    "v1_bottleneck": dict(**_V1_STEM, **_TINY_STACKS, block_type="bottleneck_block"),
    "v1_basic": dict(**_BASIC_STEM, **_TINY_STACKS, block_type="basic_block"),
    "vd_bottleneck": dict(**_VD_STEM, **_TINY_STACKS, block_type="bottleneck_block_vd"),
    "vd_basic": dict(**_VD_STEM, **_TINY_STACKS, block_type="basic_block_vd"),
    "v2_bottleneck": dict(**_V1_STEM, **_TINY_STACKS, block_type="bottleneck_block",
                          use_pre_activation=True),
    "v2_basic": dict(**_BASIC_STEM, **_TINY_STACKS, block_type="basic_block",
                     use_pre_activation=True),
}

# A non-ImageNet converter, so that tests see it was read: scale 1/255 per channel (std 255,
# 127.5, 85 px), offset -0.5, -1, -1.5 (mean 127.5, 127.5, 127.5 px).
CONVERTER = dict(scale=[1 / 255, 2 / 255, 3 / 255], offset=[-0.5, -1.0, -1.5])
CONVERTER_NORMALIZATION = {"mean": [127.5, 127.5, 127.5], "std": [255.0, 127.5, 85.0]}


def image(batch=1, height=H, width=W, seed=0, scale=1.0):
    return (np.random.RandomState(seed).uniform(0, 1, (batch, height, width, 3)) * scale
            ).astype("float32")


def conv_geometry(model):
    """``{conv layer name: (stride, dilation)}``."""
    return {layer.name: (layer.strides[0], layer.dilation_rate[0])
            for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}


def layer_table(model, weighted_only=False):
    return [
        (layer.name, type(layer).__name__, [tuple(w.shape) for w in layer.weights])
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer) and (layer.weights or not weighted_only)
    ]


def randomize(model, seed=0):
    """Random values for every variable, BN statistics included (positive variances), so
    that weight copies and normalisation are visible in the outputs."""
    rng = np.random.RandomState(seed)
    values = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path:
            values.append(rng.uniform(0.5, 1.5, shape))
        elif "moving_mean" in variable.path or "beta" in variable.path:
            values.append(rng.normal(0, 0.1, shape))
        elif "gamma" in variable.path:
            values.append(rng.uniform(0.5, 1.5, shape))
        else:
            values.append(rng.normal(0, 1.0 / np.sqrt(np.prod(shape[:-1]) or 1), shape))
    model.set_weights([v.astype("float32") for v in values])
    return model


def make_kerashub_preset(directory, layout, converter=CONVERTER, seed=0):
    """A KerasHub preset directory (``save_to_preset``) of a randomly initialised
    ``keras_hub.models.ResNetBackbone``; returns that backbone."""
    backbone = randomize(keras_hub.models.ResNetBackbone(**layout), seed)
    backbone.save_to_preset(os.fspath(directory))
    if converter is not None:
        keras_hub.layers.ResNetImageConverter(**converter).save_to_preset(os.fspath(directory))
    return backbone


def weights_by_name(model):
    return {layer.name: [np.asarray(w) for w in layer.get_weights()]
            for layer in model.layers if layer.weights}


def assert_same_weights(a, b):
    wa, wb = weights_by_name(a), weights_by_name(b)
    assert sorted(wa) == sorted(wb)
    for name in wa:
        for x, y in zip(wa[name], wb[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)


def assert_same_outputs(got, expected, err_msg=""):
    """Our graph computes what KerasHub's does, up to float rounding: our
    ``BatchNormalization`` calls the fused kernel on torch and TensorFlow (Keras' layer computes
    a chain of elementwise ops), and our ``Conv2D`` calls PyTorch's convolution directly on
    torch and computes 1x1 kernels as matmuls on JAX."""
    got, expected = keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5, err_msg=err_msg)

"""Backbones: dilated ResNets on KerasHub's layouts (with ImageNet presets at every depth),
mmsegmentation's ResNetV1c, KerasCV's layouts, and any pyramid backbone passed in.

``get_backbone(name_or_instance, output_stride=8, multi_grid=None, weights=None)`` is the
entry point (``factory``); ``pyramid_outputs`` / ``input_normalization`` are the contract the
segmentation models read (``pyramid``). Modules: ``dilation`` (which conv gets which rate),
``kerashub_resnet``, ``resnet_v1c``, ``kerascv_resnet`` (the network classes), ``adapters``
(backbones passed in), ``weights`` (presets, weights files, checkpoint downloads).
"""

from keras_segattn.backbones.adapters import PyramidBackbone, adapt_backbone
from keras_segattn.backbones.dilation import OUTPUT_STRIDES, block_rates, dilation_plan
from keras_segattn.backbones.factory import (
    BACKBONE_NAMES,
    BACKBONE_SPECS,
    IMAGENET_PRESETS,
    IMAGENET_WEIGHTS,
    backbone_config,
    get_backbone,
    stage_channels,
    stage_outputs,
)
from keras_segattn.backbones.kerascv_resnet import DilatedResNetBackbone, DilatedResNetV2Backbone
from keras_segattn.backbones.kerashub_resnet import DilatedKerasHubResNetBackbone
from keras_segattn.backbones.pyramid import (
    IMAGENET_NORMALIZATION,
    LEVELS,
    NO_NORMALIZATION,
    UNIT_SCALING,
    feature_strides,
    input_normalization,
    normalization_from_converter,
    pyramid_outputs,
)
from keras_segattn.backbones.resnet_v1c import DilatedResNetV1cBackbone
from keras_segattn.backbones.weights import WeightsNotAvailableError

__all__ = [
    "BACKBONE_NAMES",
    "BACKBONE_SPECS",
    "IMAGENET_NORMALIZATION",
    "IMAGENET_PRESETS",
    "IMAGENET_WEIGHTS",
    "LEVELS",
    "NO_NORMALIZATION",
    "OUTPUT_STRIDES",
    "UNIT_SCALING",
    "DilatedKerasHubResNetBackbone",
    "DilatedResNetBackbone",
    "DilatedResNetV1cBackbone",
    "DilatedResNetV2Backbone",
    "PyramidBackbone",
    "WeightsNotAvailableError",
    "adapt_backbone",
    "backbone_config",
    "block_rates",
    "dilation_plan",
    "feature_strides",
    "get_backbone",
    "input_normalization",
    "normalization_from_converter",
    "pyramid_outputs",
    "stage_channels",
    "stage_outputs",
]

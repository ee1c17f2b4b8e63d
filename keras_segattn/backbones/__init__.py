"""Backbones: dilated KerasCV ResNets (V1 and V2) and mmsegmentation's ResNetV1c for segmentation.

``get_backbone(name, output_stride=8, multi_grid=None, weights=None)`` is the entry point;
``stage_outputs`` / ``stage_channels`` give the four stage features (C2..C5).
"""

from keras_segattn.backbones.resnet import BACKBONE_NAMES
from keras_segattn.backbones.resnet import IMAGENET_PRESETS
from keras_segattn.backbones.resnet import OUTPUT_STRIDES
from keras_segattn.backbones.resnet import DilatedResNetBackbone
from keras_segattn.backbones.resnet import DilatedResNetV1cBackbone
from keras_segattn.backbones.resnet import DilatedResNetV2Backbone
from keras_segattn.backbones.resnet import WeightsNotAvailableError
from keras_segattn.backbones.resnet import backbone_config
from keras_segattn.backbones.resnet import dilation_plan
from keras_segattn.backbones.resnet import get_backbone
from keras_segattn.backbones.resnet import stage_channels
from keras_segattn.backbones.resnet import stage_outputs
from keras_segattn.backbones.pyramid import LEVELS, input_normalization, pyramid_outputs

__all__ = [
    "BACKBONE_NAMES",
    "IMAGENET_PRESETS",
    "OUTPUT_STRIDES",
    "DilatedResNetBackbone",
    "DilatedResNetV1cBackbone",
    "DilatedResNetV2Backbone",
    "WeightsNotAvailableError",
    "backbone_config",
    "dilation_plan",
    "get_backbone",
    "stage_channels",
    "stage_outputs",
    "LEVELS",
    "input_normalization",
    "pyramid_outputs",
]

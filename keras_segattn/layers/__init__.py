"""Attention layers for semantic segmentation (``keras.ops`` only, channels-last)."""

from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.layers.resize import Resize

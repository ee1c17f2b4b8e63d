"""Attention layers for semantic segmentation (``keras.ops`` only, channels-last)."""

from keras_segattn.layers.batch_norm import (
    BatchNormalization, apply_batch_norm, set_synchronized_batch_norm,
)
from keras_segattn.layers.channel_attention import ChannelAttention
from keras_segattn.layers.conv import Conv2D
from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.layers.criss_cross_attention import CrissCrossAttention
from keras_segattn.layers.efficient_attention import EfficientAttention
from keras_segattn.layers.channelized_axial_attention import ChannelizedAxialAttention
from keras_segattn.layers.fully_attentional import FullyAttentional
from keras_segattn.layers.linear_attention import LinearChannelAttention, LinearPositionAttention
from keras_segattn.layers.interlaced_sparse_attention import (
    InterlacedSparseAttention,
    ISASelfAttention,
)
from keras_segattn.layers.non_local import NonLocalBlock
from keras_segattn.layers.pooling import MaxPooling2D
from keras_segattn.layers.position_attention import PositionAttention
from keras_segattn.layers.resize import Resize
from keras_segattn.layers.scale_attention import ScaleAttention
from keras_segattn.layers.squeeze_attention import SqueezeAttention
from keras_segattn.layers.normalization import ImageNormalization

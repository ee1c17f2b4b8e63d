"""ISANet: Interlaced Sparse Self-Attention (Huang et al., arXiv 1907.12273).

Reference: openseg-group/openseg.pytorch @ ``aefc7551`` (``lib/models/nets/isanet.py``:
``isa_head`` = 3x3 conv-BNReLU + ``ISA_Module``; ``dsn_head`` on layer3; ``fs_auxce_loss``
= CE + 0.4 * CE(dsn)).
"""

import keras

from keras_segattn import heads
from keras_segattn.common import pair
from keras_segattn.models.base import (
    NamedSegmenter, constructor_arguments, register_model, standard_auxiliary_heads,
)


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class ISANet(NamedSegmenter):
    """ISANet: dilated ResNet -> ``ISAHead`` (in-conv, ISA module with concat fusion, 1x1).

    Outputs: ``"logits"`` (1.0) and, with ``aux_head``, ``"aux"`` (0.4): the official dsn
    head on stage 3 (3x3 conv 1024 -> 512 with bias, BN, activation, Dropout2d(0.05), 1x1).

    Args:
        num_classes: int.
        backbone, output_stride, aux_head, input_shape, backbone_weights: see
            ``NamedSegmenter``.
        align_corners: False (default, mmseg) or True (official).
        down_factor: ``(P_h, P_w)`` local block size ((8, 8)).
        channels, key_channels, value_channels: 512, 256, 512.
        dropout: Dropout2d rate (0.05, openseg; mmseg 0.1).
        activation: ``"leaky_relu"`` (default: openseg's inplace_abn training setting) or
            ``"relu"`` (mmseg / ``bn_type="torchbn"``).
        aux_channels: dsn head width (512).
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=False,
                 down_factor=(8, 8), channels=512, key_channels=256, value_channels=512,
                 dropout=0.05, activation="leaky_relu", aux_channels=512, **kwargs):
        down_factor = pair(down_factor, "down_factor", "ISANet", allow_none=False)
        arguments = constructor_arguments(locals())
        head = heads.ISAHead(num_classes, channels=channels, key_channels=key_channels,
                             value_channels=value_channels, down_factor=down_factor,
                             dropout=dropout, activation=activation, name="head")
        # The official "dsn" head: its 3x3 conv has a bias.
        aux = standard_auxiliary_heads(arguments, use_bias=True)
        super().__init__(arguments, decode_head=head, auxiliary_heads=aux, **kwargs)

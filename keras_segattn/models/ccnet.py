"""CCNet: Criss-Cross Network (Huang et al., ICCV 2019 / TPAMI 2020, arXiv 1811.11721).

Reference: speedinghzl/CCNet @ ``1fae6c67`` (``networks/ccnet.py``: ``RCCAModule`` head and
the "dsn" auxiliary head on layer3; ``loss/criterion.py``: CE + 0.4 * CE(dsn)).
"""

import keras

from keras_segattn import heads
from keras_segattn.models.base import (
    NamedSegmenter, constructor_arguments, register_model, standard_auxiliary_heads,
)


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class CCNet(NamedSegmenter):
    """CCNet: dilated ResNet -> ``CCHead`` (recurrent criss-cross attention, R = 2).

    Outputs: ``"logits"`` (1.0) and, with ``aux_head``, ``"aux"`` (0.4): the official "dsn"
    head on stage 3 (3x3 conv 1024 -> 512 **with bias**, BN, activation, Dropout2d(0.1), 1x1).

    Args:
        num_classes: int.
        backbone, output_stride, aux_head, input_shape, backbone_weights: see
            ``NamedSegmenter``.
        align_corners: False (default, mmseg) or True (official).
        recurrence: CCA passes with shared weights (2).
        inter_channels: ``None`` (C5 // 4 = 512).
        channels: bottleneck width (512).
        dropout: Dropout2d rate (0.1).
        activation: ``"leaky_relu"`` (default: InPlaceABN slope 0.01 as in the official code)
            or ``"relu"`` (mmseg).
        aux_channels: dsn head width (512).
        aux_use_bias: the dsn head's 3x3 conv has a bias (True, official CCNet); mmseg's
            auxiliary FCNHead has none: ``aux_use_bias=False, aux_channels=256,
            activation="relu"`` is mmseg's CCNet, whose whole checkpoint then ports
            (``keras_segattn.models.mmseg_weights``).
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=False,
                 recurrence=2, inter_channels=None, channels=512, dropout=0.1,
                 activation="leaky_relu", aux_channels=512, aux_use_bias=True, **kwargs):
        arguments = constructor_arguments(locals())
        head = heads.CCHead(num_classes, recurrence=recurrence, inter_channels=inter_channels,
                            channels=channels, dropout=dropout, activation=activation,
                            name="head")
        # The official "dsn" head's 3x3 conv has a bias (aux_use_bias=False: mmseg's).
        aux = standard_auxiliary_heads(arguments, use_bias=aux_use_bias)
        super().__init__(arguments, decode_head=head, auxiliary_heads=aux, **kwargs)

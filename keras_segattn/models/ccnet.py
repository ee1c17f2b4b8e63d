"""CCNet: Criss-Cross Network (Huang et al., ICCV 2019 / TPAMI 2020, arXiv 1811.11721).

Reference: speedinghzl/CCNet @ ``1fae6c67`` (``networks/ccnet.py``: ``RCCAModule`` head and
the "dsn" auxiliary head on layer3; ``loss/criterion.py``: CE + 0.4 * CE(dsn)).
"""

import keras

from keras_segattn.heads import CCHead
from keras_segattn.models.base import (
    SegmentationModel, add_aux_fcn_head, build_trunk, register_model, resolve_backbone,
)


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class CCNet(SegmentationModel):
    """CCNet: dilated ResNet -> ``CCHead`` (recurrent criss-cross attention, R = 2).

    Outputs: ``"logits"`` (1.0) and, with ``aux_head``, ``"aux"`` (0.4): the official "dsn"
    head on stage 3 (3x3 conv 1024 -> 512 **with bias**, BN, activation, Dropout2d(0.1), 1x1).

    Args:
        num_classes: int.
        backbone, output_stride, aux_head, input_shape, backbone_weights: see
            ``SegmentationModel``.
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
        backbone_model = resolve_backbone(backbone, output_stride=output_stride,
                                          input_shape=input_shape, weights=backbone_weights)
        inputs, features = build_trunk(backbone_model, input_shape)
        head = CCHead(num_classes, recurrence=recurrence, inter_channels=inter_channels,
                      channels=channels, dropout=dropout, activation=activation, name="head")
        logits = {"logits": head(features["P5"])}
        loss_weights = {"logits": 1.0}
        if aux_head:  # the official "dsn" head: its 3x3 conv has a bias
            add_aux_fcn_head(logits, loss_weights, features["P4"], num_classes,
                             channels=aux_channels, dropout=dropout, activation=activation,
                             use_bias=aux_use_bias)
        self._init_from_logits(
            inputs, logits, backbone=backbone_model, num_classes=num_classes,
            loss_weights=loss_weights, align_corners=align_corners,
            init_config=dict(
                num_classes=num_classes, output_stride=output_stride, aux_head=aux_head,
                input_shape=tuple(input_shape), backbone_weights=backbone_weights,
                align_corners=align_corners, recurrence=recurrence,
                inter_channels=inter_channels, channels=channels, dropout=dropout,
                activation=activation, aux_channels=aux_channels, aux_use_bias=aux_use_bias,
            ),
            **kwargs,
        )

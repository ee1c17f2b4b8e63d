"""NonLocalNet: dilated ResNet + non-local head (mmsegmentation ``nonlocal_r50-d8``).

Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018 (arXiv 1711.07971);
configuration of mmsegmentation ``configs/_base_/models/nonlocal_r50-d8.py``.
"""

import keras

from keras_segattn.heads.nl_head import NLHead
from keras_segattn.models.base import (
    SegmentationModel, add_aux_fcn_head, build_trunk, register_model, resolve_backbone,
)


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class NonLocalNet(SegmentationModel):
    """NonLocalNet: backbone -> ``NLHead`` (+ mmseg auxiliary FCN head on stage 3).

    Outputs: ``"logits"`` (1.0) and ``"aux"`` (0.4, with ``aux_head``).

    Args:
        num_classes: int.
        backbone, output_stride, aux_head, input_shape, backbone_weights, align_corners: see
            ``SegmentationModel``.
        channels: head width (512). reduction: non-local reduction (2). use_scale: True.
        dropout: 0.1. activation: ``"relu"``. aux_channels: 256.
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=False,
                 channels=512, reduction=2, use_scale=True, dropout=0.1, activation="relu",
                 aux_channels=256, **kwargs):
        backbone_model = resolve_backbone(backbone, output_stride=output_stride,
                                          input_shape=input_shape, weights=backbone_weights)
        inputs, features = build_trunk(backbone_model, input_shape)
        head = NLHead(num_classes, channels=channels, reduction=reduction, use_scale=use_scale,
                      dropout=dropout, activation=activation, name="head")
        logits = {"logits": head(features["P5"])}
        loss_weights = {"logits": 1.0}
        if aux_head:
            add_aux_fcn_head(logits, loss_weights, features["P4"], num_classes,
                             channels=aux_channels, dropout=dropout, activation=activation)
        self._init_from_logits(
            inputs, logits, backbone=backbone_model, num_classes=num_classes,
            loss_weights=loss_weights, align_corners=align_corners,
            init_config=dict(
                num_classes=num_classes, output_stride=output_stride, aux_head=aux_head,
                input_shape=tuple(input_shape), backbone_weights=backbone_weights,
                align_corners=align_corners, channels=channels, reduction=reduction,
                use_scale=use_scale, dropout=dropout, activation=activation,
                aux_channels=aux_channels,
            ),
            **kwargs,
        )

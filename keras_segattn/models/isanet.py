"""ISANet: Interlaced Sparse Self-Attention (Huang et al., arXiv 1907.12273).

Reference: openseg-group/openseg.pytorch @ ``aefc7551`` (``lib/models/nets/isanet.py``:
``isa_head`` = 3x3 conv-BNReLU + ``ISA_Module``; ``dsn_head`` on layer3; ``fs_auxce_loss``
= CE + 0.4 * CE(dsn)).
"""

import keras

from keras_segattn.heads import ISAHead
from keras_segattn.models.base import (
    SegmentationModel, add_aux_fcn_head, build_trunk, register_model, resolve_backbone,
)


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class ISANet(SegmentationModel):
    """ISANet: dilated ResNet -> ``ISAHead`` (in-conv, ISA module with concat fusion, 1x1).

    Outputs: ``"logits"`` (1.0) and, with ``aux_head``, ``"aux"`` (0.4): the official dsn
    head on stage 3 (3x3 conv 1024 -> 512 with bias, BN, activation, Dropout2d(0.05), 1x1).

    Args:
        num_classes: int.
        backbone, output_stride, aux_head, input_shape, backbone_weights: see
            ``SegmentationModel``.
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
        if isinstance(down_factor, int):
            down_factor = (down_factor, down_factor)
        down_factor = tuple(int(f) for f in down_factor)
        backbone_model = resolve_backbone(backbone, output_stride=output_stride,
                                          input_shape=input_shape, weights=backbone_weights)
        inputs, features = build_trunk(backbone_model, input_shape)
        head = ISAHead(num_classes, channels=channels, key_channels=key_channels,
                       value_channels=value_channels, down_factor=down_factor, dropout=dropout,
                       activation=activation, name="head")
        logits = {"logits": head(features["P5"])}
        loss_weights = {"logits": 1.0}
        if aux_head:  # the official "dsn" head: its 3x3 conv has a bias
            add_aux_fcn_head(logits, loss_weights, features["P4"], num_classes,
                             channels=aux_channels, dropout=dropout, activation=activation,
                             use_bias=True)
        self._init_from_logits(
            inputs, logits, backbone=backbone_model, num_classes=num_classes,
            loss_weights=loss_weights, align_corners=align_corners,
            init_config=dict(
                num_classes=num_classes, output_stride=output_stride, aux_head=aux_head,
                input_shape=tuple(input_shape), backbone_weights=backbone_weights,
                align_corners=align_corners, down_factor=list(down_factor),
                channels=channels, key_channels=key_channels, value_channels=value_channels,
                dropout=dropout, activation=activation, aux_channels=aux_channels,
            ),
            **kwargs,
        )

"""DANet: Dual Attention Network (Fu et al., CVPR 2019, arXiv 1809.02983).

Reference: junfu1115/DANet @ ``b0a0fa00`` (``encoding/models/sseg/danet.py``); the auxiliary
FCN head is mmsegmentation's (``configs/_base_/models/danet_r50-d8.py``).
"""

import keras

from keras_segattn import heads
from keras_segattn.models.base import (
    NamedSegmenter, constructor_arguments, register_model, standard_auxiliary_heads,
)


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class DANet(NamedSegmenter):
    """DANet: dilated ResNet -> ``DANetHead`` (PAM + CAM branches).

    Outputs (float32 logits at input resolution):

    * ``"logits"``: ``conv8(sa + sc)``, the prediction (loss weight 1.0);
    * ``"pam"``: position-attention branch ``conv6(sa)`` (1.0);
    * ``"cam"``: channel-attention branch ``conv7(sc)`` (1.0) -- the official code sums the
      three CE losses unweighted (``SegmentationMultiLosses``);
    * ``"aux"`` (``aux_head=True``): mmseg's auxiliary FCN head on stage 3 (0.4). The
      official DANet has no such head: pass ``aux_head=False`` for the paper model.

    Args:
        num_classes: int.
        backbone, output_stride, aux_head, input_shape, backbone_weights: see
            ``NamedSegmenter`` (defaults ``"resnet50"``, 8, True, ``(None, None, 3)``,
            ``None``).
        align_corners: final bilinear upsampling; False (mmseg, default) or True (official).
        inter_channels: ``None`` (C5 // 4 = 512).
        reduction: PAM query/key reduction (8 -> 64 channels).
        dropout: Dropout2d before the classifiers (0.1).
        activation: ``"relu"`` (official) or ``"leaky_relu"``.
        aux_channels: width of the auxiliary head (256, mmseg).

    Example:
    >>> model = DANet(num_classes=19)  # ResNet-50 OS8, random init, offline  # doctest: +SKIP
    >>> model.compile()  # SGD 0.01 poly, wd 5e-4, CE on every output  # doctest: +SKIP
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=False,
                 inter_channels=None, reduction=8, dropout=0.1, activation="relu",
                 aux_channels=256, **kwargs):
        arguments = constructor_arguments(locals())
        head = heads.DANetHead(num_classes, inter_channels=inter_channels, reduction=reduction,
                               dropout=dropout, activation=activation, name="head")
        super().__init__(arguments, decode_head=head,
                         auxiliary_heads=standard_auxiliary_heads(arguments), **kwargs)

"""NonLocalNet: dilated ResNet + non-local head (mmsegmentation ``nonlocal_r50-d8``).

Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018 (arXiv 1711.07971);
configuration of mmsegmentation ``configs/_base_/models/nonlocal_r50-d8.py``.
"""

import keras

from keras_segattn import heads
from keras_segattn.models.base import (
    NamedSegmenter, constructor_arguments, register_model, standard_auxiliary_heads,
)


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class NonLocalNet(NamedSegmenter):
    """NonLocalNet: backbone -> ``NLHead`` (+ mmseg auxiliary FCN head on stage 3).

    Outputs: ``"logits"`` (1.0) and ``"aux"`` (0.4, with ``aux_head``).

    Args:
        num_classes: int.
        backbone, output_stride, aux_head, input_shape, backbone_weights, align_corners: see
            ``NamedSegmenter``.
        channels: head width (512). reduction: non-local reduction (2). use_scale: True.
        dropout: 0.1. activation: ``"relu"``. aux_channels: 256.
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=False,
                 channels=512, reduction=2, use_scale=True, dropout=0.1, activation="relu",
                 aux_channels=256, **kwargs):
        arguments = constructor_arguments(locals())
        head = heads.NLHead(num_classes, channels=channels, reduction=reduction,
                            use_scale=use_scale, dropout=dropout, activation=activation,
                            name="head")
        super().__init__(arguments, decode_head=head,
                         auxiliary_heads=standard_auxiliary_heads(arguments), **kwargs)

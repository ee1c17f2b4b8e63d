"""FCN (dilated ResNet + mmsegmentation FCNHead), the baseline of every attention model.

Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015
(arXiv 1411.4038); the dilated-ResNet "FCN-D8" variant as configured in mmsegmentation
``configs/_base_/models/fcn_r50-d8.py``: FCNHead(2048 -> 512, 2 convs, concat_input) + auxiliary
FCNHead on stage 3 (1024 -> 256, 1 conv, loss weight 0.4).
"""

import keras

from keras_segattn import heads
from keras_segattn.models.base import (
    NamedSegmenter, constructor_arguments, register_model, standard_auxiliary_heads,
)


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class FCN(NamedSegmenter):
    """Dilated FCN: backbone -> ``FCNHead`` (+ auxiliary FCN head on stage 3).

    Outputs (dict of float32 logits at input resolution): ``"logits"``, and ``"aux"`` when
    ``aux_head`` (loss weights 1.0 / 0.4).

    Args:
        num_classes: int.
        backbone: backbone name (``keras_segattn.backbones``) or a backbone model.
            Default ``"resnet50"``.
        output_stride: 8 (default), 16 or 32.
        aux_head: bool, add the auxiliary head. Default True.
        input_shape: ``(H, W, 3)``; ``None`` sizes allowed. Default ``(None, None, 3)``.
        backbone_weights: backbone weights (``None``: random init, offline).
        align_corners: bool, final upsampling mode. Default False (mmseg).
        channels, num_convs, concat_input, dropout, activation: ``FCNHead`` options
            (512, 2, True, 0.1, ``"relu"``).
        aux_channels: width of the auxiliary head (256, mmseg).

    Example:
    >>> model = FCN(num_classes=19, backbone="resnet_tiny")  # doctest: +SKIP
    >>> model.predict(images).shape  # (B, H, W, 19)  # doctest: +SKIP
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=False,
                 channels=512, num_convs=2, concat_input=True, dropout=0.1, activation="relu",
                 aux_channels=256, **kwargs):
        arguments = constructor_arguments(locals())
        head = heads.FCNHead(num_classes, channels=channels, num_convs=num_convs,
                             concat_input=concat_input, dropout=dropout, activation=activation,
                             name="head")
        super().__init__(arguments, decode_head=head,
                         auxiliary_heads=standard_auxiliary_heads(arguments), **kwargs)

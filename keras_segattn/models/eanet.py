"""EANet: Efficient Attention (Shen et al., WACV 2021, arXiv:1812.01243) in a segmenter.

**Our** design (the paper has no segmentation head): ``heads.EANetHead``, an mmseg
``FCNHead`` with the Efficient Attention block between its convs, on C5, plus mmseg's
auxiliary FCN head on C4 (loss weight 0.4). See ``keras_segattn.heads.eanet_head`` for the
reference module and the defaults chosen.
"""

import keras

from keras_segattn import heads
from keras_segattn.models.base import (
    NamedSegmenter, constructor_arguments, register_model, standard_auxiliary_heads,
)


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class EANet(NamedSegmenter):
    """Efficient Attention segmentation model (our FCN-style head, see the module docstring).

    Outputs (dict of float32 logits at the input resolution): ``"logits"`` (``EANetHead`` on
    ``P5``, loss weight 1.0) and, when ``aux_head``, ``"aux"`` (auxiliary FCNHead on ``P4``,
    loss weight 0.4).

    Args:
        num_classes: int.
        backbone: backbone name or model. Default ``"resnet50"``.
        output_stride: 8 (default), 16 or 32.
        aux_head: bool. Default True.
        input_shape: ``(H, W, 3)``; ``None`` sizes allowed.
        backbone_weights: backbone weights (``None``: random init).
        align_corners: bool, final bilinear resize. Default False (mmseg).
        channels, key_channels, value_channels, num_heads, concat_input, dropout,
            activation: ``EANetHead`` options (512, 256, 512, 8, True, 0.1, ``"relu"``).

    Example:
    >>> model = EANet(num_classes=19, backbone="resnet_tiny")  # doctest: +SKIP
    >>> model.predict(images).shape  # (B, H, W, 19)  # doctest: +SKIP
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=False,
                 channels=512, key_channels=256, value_channels=512, num_heads=8,
                 concat_input=True, dropout=0.1, activation="relu", **kwargs):
        arguments = constructor_arguments(locals())
        head = heads.EANetHead(num_classes, channels=channels, key_channels=key_channels,
                               value_channels=value_channels, num_heads=num_heads,
                               concat_input=concat_input, dropout=dropout,
                               activation=activation, name="head")
        super().__init__(arguments, decode_head=head,
                         auxiliary_heads=standard_auxiliary_heads(arguments), **kwargs)

"""LANet: DANet-style dual head with the Linear Attention Mechanism.

Rui Li, Jianlin Su, Chenxi Duan, Shunyi Zheng, "Linear Attention Mechanism: An Efficient
Attention for Semantic Segmentation", arXiv:2007.14902. **Our** assembly (the DANet head with
the linear modules, ``keras_segattn.heads.LANetHead``, see its module docstring)::

    sa = conv51(LinearPositionAttention(conv5a(C5)))   # conv* = 3x3 conv-BN-act, C5 // 4 wide
    sc = conv52(LinearChannelAttention(conv5c(C5)))
    logits = conv8(Dropout2d(sa + sc))
    aux    = mmseg auxiliary FCNHead on C4 (loss weight 0.4)
"""

import keras

from keras_segattn import heads
from keras_segattn.models.base import (
    NamedSegmenter, constructor_arguments, register_model, standard_auxiliary_heads,
)


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class LANet(NamedSegmenter):
    """Linear-attention DANet-style model (see the module docstring).

    Outputs (dict of float32 logits at the input resolution): ``"logits"`` (``LANetHead`` on
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
        inter_channels, reduction, eps, dropout, activation: ``LANetHead`` options
            (``None`` = C5 // 4, 8, 1e-6, 0.1, ``"relu"``).
        aux_channels: int, auxiliary head width. Default 256.

    Example:
    >>> model = LANet(num_classes=6, backbone="resnet_tiny")  # doctest: +SKIP
    >>> model.predict(images).shape  # (B, H, W, 6)  # doctest: +SKIP
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=False,
                 inter_channels=None, reduction=8, eps=1e-6, dropout=0.1, activation="relu",
                 aux_channels=256, **kwargs):
        arguments = constructor_arguments(locals())
        head = heads.LANetHead(num_classes, inter_channels=inter_channels, reduction=reduction,
                               eps=eps, dropout=dropout, activation=activation, name="head")
        super().__init__(arguments, decode_head=head,
                         auxiliary_heads=standard_auxiliary_heads(arguments), **kwargs)

"""EANet: a segmentation model built around Efficient Attention.

Zhuoran Shen, Mingyuan Zhang, Haiyu Zhao, Shuai Yi, Hongsheng Li, "Efficient Attention:
Attention with Linear Complexities", WACV 2021, arXiv:1812.01243.

Reference module: ``cmsflash/efficient-attention`` @
``46a5f9eaf09470affb0ab30932b7748cc3c871ef``, ``efficient_attention.py``
(``keras_segattn.layers.EfficientAttention``:
``y = reproject(concat_heads(softmax_N(K)^T-context . softmax_C(Q))) + x``).

The paper is **not** a semantic-segmentation paper (detection, instance segmentation and
stereo depth), so there is no reference segmentation head. This model is **our** design, an
mmsegmentation ``FCNHead`` with the attention block inserted between its two convs (the way
mmseg's NLHead / ISAHead wrap their blocks)::

    C5 -> ConvBNReLU 3x3 (512) -> EfficientAttention -> ConvBNReLU 3x3 (512)
       -> concat([C5, .]) -> ConvBNReLU 3x3 (512) -> Dropout2d 0.1 -> 1x1 logits
    C4 -> auxiliary FCNHead (256), loss weight 0.4

Defaults chosen here (UNVERIFIED for segmentation, documented choices): ``key_channels=256``,
``value_channels=512`` and ``num_heads=8`` for a 512-channel input (the key/value widths of
ISANet/OCNet's self-attention blocks; the head count keeps 32 key channels per head).
"""

import keras

from keras_segattn import heads
from keras_segattn.models.base import NamedSegmenter, constructor_arguments, register_model


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
        aux = [heads.auxiliary_fcn_head(num_classes, dropout=dropout,
                                        activation=activation)] if aux_head else []
        super().__init__(arguments, decode_head=head, auxiliary_heads=aux, **kwargs)

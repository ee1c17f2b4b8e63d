"""CAANet: Channelized Axial Attention (Huang et al., AAAI 2022, arXiv:2101.07434).

Reference: ``edwardyehuang/CAR`` / ``edwardyehuang/CAA`` (see ``keras_segattn.heads.caa_head``
for the head, its reference commits and deviations). The CAA repository's auxiliary head is
a ConvBnRelu 1x1 -> 256, dropout 0.1, 1x1 logits on the **last** backbone endpoint (the main
head's input), loss rate 0.4; CAR's training configs train without it (``aux_head=False``).
The reference default output stride is 16 for the CAA model but 8 in the CAR training
configs; we default to 8.
"""


import keras

from keras_segattn import heads
from keras_segattn.models.base import NamedSegmenter, constructor_arguments, register_model


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class CAANet(NamedSegmenter):
    """CAANet (Huang et al., AAAI 2022): dilated ResNet + channelized axial attention head.

    Outputs (dict of float32 logits at the input resolution):

    * ``"logits"``: ``CAAHead`` on the last stage (``P5``); loss weight 1.0.
    * ``"aux"``: the CAA auxiliary head (1x1 ConvBnRelu 256, dropout, 1x1) on the **same**
      last stage (as in the CAA repo); loss weight 0.4 (the repo's ``aux_loss_rate``). Only
      when ``aux_head``.

    Args:
        num_classes: int.
        backbone: backbone name or model. Default ``"resnet50"`` (the paper: ResNet-101).
        output_stride: 8 (default; the CAR training configs), 16 (the CAA repo default) or 32.
        aux_head: bool. Default True.
        input_shape: ``(H, W, 3)``; ``None`` sizes allowed.
        backbone_weights: backbone weights (``None``: random init).
        align_corners: bool, final bilinear resize. Default False (``tf.image.resize``).
        filters: int, head width F. Default 512.
        channels: int, fusion width before the classifier (and of the aux head). Default 256.
        dropout: float. Default 0.1.
        activation: ``"relu"`` or ``"leaky_relu"``.
        attention_options: dict of extra ``ChannelizedAxialAttention`` arguments or ``None``.
        aux_loss_weight: float. Default 0.4.

    Example:
    >>> model = CAANet(num_classes=19, backbone="resnet_tiny")  # doctest: +SKIP
    >>> model.predict(images).shape  # (B, H, W, 19)  # doctest: +SKIP
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=False,
                 filters=512, channels=256, dropout=0.1, activation="relu",
                 attention_options=None, aux_loss_weight=0.4, **kwargs):
        arguments = constructor_arguments(locals())
        head = heads.CAAHead(num_classes, filters=filters, channels=channels, dropout=dropout,
                             activation=activation, attention_options=attention_options,
                             name="head")
        # The CAA repository's auxiliary head: 1x1 ConvBnRelu on the last stage (P5).
        aux = [heads.auxiliary_fcn_head(num_classes, channels=channels, kernel_size=1,
                                        dropout=dropout, activation=activation, in_level="P5",
                                        loss_weight=aux_loss_weight)] if aux_head else []
        super().__init__(arguments, decode_head=head, auxiliary_heads=aux, **kwargs)

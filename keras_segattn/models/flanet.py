"""FLANet: Fully Attentional Network (Song et al., AAAI 2022, arXiv:2112.04108).

Reference: ``maggiesong7/FullyAttentional`` @ ``52af4fdf`` (``model.py``; model code only).
``heads.FLANetHead`` on C5 (``logits``) and two ``heads.FLANetOutput`` auxiliary outputs on
C3 (``aux_stage2``) and C4 (``aux_stage3``), all resized with ``align_corners=True`` as in the
reference. The auxiliary loss weights (0.4 each) are not in the released code (UNVERIFIED);
see ``keras_segattn.heads.flanet_head`` for the architecture and deviations.
"""

import keras

from keras_segattn import heads
from keras_segattn.models.base import NamedSegmenter, constructor_arguments, register_model


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class FLANet(NamedSegmenter):
    """FLANet (Song et al., AAAI 2022): dilated ResNet + Fully Attentional head.

    Outputs (dict of float32 logits at the input resolution, resized with ``align_corners``):

    * ``"logits"``: ``FLANetHead`` on stage 4 (``P5``); loss weight 1.0.
    * ``"aux_stage2"``: ``FLANetOutput(64)`` on stage 2 (``P3``, layer2); loss weight 0.4.
    * ``"aux_stage3"``: ``FLANetOutput(64)`` on stage 3 (``P4``, layer3); loss weight 0.4.
      (both only when ``aux_head``; the weights are UNVERIFIED, not in the reference code).

    Args:
        num_classes: int.
        backbone: backbone name or model. Default ``"resnet50"`` (the paper: ResNet-101).
        output_stride: 8 (default, the reference), 16 or 32.
        aux_head: bool, add the two auxiliary outputs. Default True.
        input_shape: ``(H, W, 3)``; ``None`` sizes allowed.
        backbone_weights: backbone weights (``None``: random init).
        align_corners: bool, final bilinear resize. Default True (the reference).
        channels: int, head width. Default 512.
        aux_channels: int, auxiliary output width. Default 64.
        dropout: float, Dropout2d rate. Default 0.1.
        activation: ``"relu"`` or ``"leaky_relu"``.
        aux_loss_weight: float, weight of each auxiliary output. Default 0.4.

    Example:
    >>> model = FLANet(num_classes=19, backbone="resnet_tiny")  # doctest: +SKIP
    >>> model.predict(images).shape  # (B, H, W, 19)  # doctest: +SKIP
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=True,
                 channels=512, aux_channels=64, dropout=0.1, activation="relu",
                 aux_loss_weight=0.4, **kwargs):
        arguments = constructor_arguments(locals())
        head = heads.FLANetHead(num_classes, channels=channels, dropout=dropout,
                                activation=activation, name="head")
        aux = [heads.FLANetOutput(num_classes, mid_channels=aux_channels, dropout=dropout,
                                  activation=activation, in_levels=(level,),
                                  output_names=key, loss_weights=aux_loss_weight,
                                  name=f"{key}_head")
               for key, level in (("aux_stage2", "P3"), ("aux_stage3", "P4"))]
        super().__init__(arguments, decode_head=head,
                         auxiliary_heads=aux if aux_head else [], **kwargs)

"""FLANet: Fully Attentional Network.

Qi Song, Jie Li, Chenghong Li, Hao Guo, Rui Huang, "Fully Attentional Network for Semantic
Segmentation", AAAI 2022, arXiv:2112.04108.

Reference: ``maggiesong7/FullyAttentional`` @ ``52af4fdf210df0503fab936b35a3508cb5198811``,
``model.py`` (model code only: no training script, configs or losses were released).

Architecture (as in the reference)::

    C5 (2048) -> [3x3 conv 512, BN, ReLU] x 2 -> FullyAttentional(512) -> fa
    concat([C5, fa]) (2560) -> FLANetOutput(512) -> logits
    C3 (layer2, 512)  -> FLANetOutput(64) -> aux_stage2
    C4 (layer3, 1024) -> FLANetOutput(64) -> aux_stage3

``FLANetOutput``: nearest x2 upsampling, 3x3 conv (no bias), BN, ReLU, Dropout2d(0.1), 1x1 conv
with bias. Every output is then bilinearly resized to the input with ``align_corners=True``.

UNVERIFIED / deviations:
* Auxiliary loss weights are not in the released code; 0.4 each (the usual deep-supervision
  weight) is our choice.
* The reference initialises every conv with ``kaiming_normal_(a=1)``; we keep Keras' default
  Glorot-uniform init (irrelevant once weights are trained or ported).
* The official FullyAttentionalBlock pairs descriptors across samples for batch > 1 (a bug,
  see mechanisms.md section 7); ``keras_segattn.layers.FullyAttentional`` pairs every sample with
  its own descriptors (identical to the reference for batch 1).
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

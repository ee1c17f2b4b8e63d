"""SANet: Squeeze-and-Attention Networks.

Zilong Zhong, Zhong Qiu Lin, Rene Bidart, Xiaodan Hu, Ibrahim Ben Daya, Zhifeng Li, Wei-Shi
Zheng, Jonathan Li, Alexander Wong, "Squeeze-and-Attention Networks for Semantic
Segmentation", CVPR 2020, arXiv:1909.03402.

**No official code is known** (mechanisms.md section 6). The block is
``keras_segattn.layers.SqueezeAttention``
(``X_out = X_attn * X_res + X_attn``, ``X_attn = Up(sigmoid(F_attn(AvgPool(X_in))))``); the
model below follows the paper's description as far as it is known:

* four SA heads on the four hierarchical backbone stages (``P2``..``P5``), their outputs
  resized to the finest (stage-1, stride 4) resolution, concatenated and fused for the final
  mask prediction (abstract [3rd]);
* an image-level **categorical** loss: a multi-label classifier (``"image_logits"``,
  ``(B, num_classes)``) trained with binary cross-entropy against the multi-hot set of classes
  present in the mask (label 255 ignored), see ``keras_segattn.losses.SANetCategoricalLoss``;
* a **dense** auxiliary loss: mmseg's auxiliary FCN head on stage 3 (``"aux"``).

UNVERIFIED (recalled, not checked against the PDF; all configurable):
* the total loss ``L = L_mask + alpha * L_cat + beta * L_den`` with ``alpha = 0.2`` and
  ``beta = 0.8``;
* the widths of the SA heads (256 each here), the 1x1 fusion conv (256), the source of the
  categorical branch (global average of the last SA head's output -> Dense), and the
  ``align_corners=True`` resize (PyTorch-Encoding/EncNet convention, which SANet's training
  setup is recalled to follow).
"""

import keras

from keras_segattn import heads
from keras_segattn.models.base import (
    NamedSegmenter, constructor_arguments, register_model, standard_auxiliary_heads,
)
from keras_segattn.heads.sanet_head import IMAGE_OUTPUT
from keras_segattn.losses import SANetCategoricalLoss, class_presence  # noqa: F401 (former home)


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class SANet(NamedSegmenter):
    """SANet (Zhong et al., CVPR 2020): four-stage Squeeze-and-Attention head + losses.

    Outputs:

    * ``"logits"``: merged SA heads, float32 ``(B, H, W, num_classes)``; loss weight 1.0.
    * ``"aux"``: auxiliary FCN head on stage 3 (the "dense" loss); loss weight
      ``dense_loss_weight`` (beta, default 0.8, UNVERIFIED). Only when ``aux_head``.
    * ``"image_logits"``: float32 ``(B, num_classes)`` multi-label logits (the "categorical"
      loss, ``SANetCategoricalLoss``: BCE against the classes present in the mask, 255
      ignored); loss weight ``categorical_loss_weight`` (alpha, default 0.2, UNVERIFIED).
      Only when ``categorical_loss``.

    ``compile()`` with ``loss="auto"`` puts ``keras_segattn.losses.SANetCategoricalLoss`` on
    ``"image_logits"`` and the usual ``SparseCategoricalCrossentropy(ignore_class=255)`` on the
    pixel outputs (``keras_segattn.recipe``); the
    single label mask ``y`` given to ``fit`` goes to every output. A per-pixel
    ``sample_weight`` cannot be applied to ``"image_logits"``: pass a dict
    ``sample_weight`` keyed by output in that case. ``predict()`` returns only ``"logits"``.

    Args:
        num_classes: int.
        backbone: backbone name or model. Default ``"resnet50"``.
        output_stride: 8 (default), 16 or 32.
        aux_head: bool, the dense auxiliary head. Default True.
        input_shape: ``(H, W, 3)``; ``None`` sizes allowed.
        backbone_weights: backbone weights (``None``: random init).
        align_corners: bool, resizes in the head and to the input. Default True.
        stage_channels: int, width of each SA head. Default 256.
        channels: int, fusion width. Default 256.
        dropout: float. Default 0.1.
        activation: ``"relu"`` or ``"leaky_relu"``.
        categorical_loss: bool, add ``"image_logits"``. Default True.
        categorical_loss_weight: float, alpha. Default 0.2.
        dense_loss_weight: float, beta. Default 0.8.

    Example:
    >>> model = SANet(num_classes=21, backbone="resnet_tiny")  # doctest: +SKIP
    >>> model.compile()  # doctest: +SKIP
    >>> model.fit(images, masks)  # doctest: +SKIP
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=True,
                 stage_channels=256, channels=256, dropout=0.1, activation="relu",
                 categorical_loss=True, categorical_loss_weight=0.2, dense_loss_weight=0.8,
                 **kwargs):
        arguments = constructor_arguments(locals())
        head = heads.SANetHead(num_classes, stage_channels=stage_channels, channels=channels,
                               dropout=dropout, activation=activation,
                               align_corners=align_corners, image_output=categorical_loss,
                               loss_weights={"logits": 1.0,
                                             IMAGE_OUTPUT: categorical_loss_weight},
                               name="head")
        aux = standard_auxiliary_heads(arguments, loss_weight=dense_loss_weight)
        super().__init__(arguments, decode_head=head, auxiliary_heads=aux, **kwargs)

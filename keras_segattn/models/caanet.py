"""CAANet: Channelized Axial Attention.

Ye Huang, Di Kang, Wenjing Jia, Xiangjian He, Liu Liu, "Channelized Axial Attention - Considering
Channel Relation within Spatial Attention for Semantic Segmentation", AAAI 2022,
arXiv:2101.07434.

Reference (TensorFlow 2 / Keras, NHWC): ``edwardyehuang/CAA`` @
``74a1de8b1cfca6a6669e4fe76dc2130e37fba19d`` (``models/modules/caa_head.py``, ``models/caa.py``);
the same head with the ``hidden_activation`` bug fixed in ``edwardyehuang/CAR`` @
``97c90d431ee2e633db407f956704c202d4abf919`` (``heads/caa.py``).

Head (filters F = 512)::

    x (last backbone feature)
      entry: ConvBnRelu 3x3 -> F (no bias)
      ChannelizedAxialAttention (vertical then horizontal pass, channel gates)
      end: ConvBnRelu 1x1 -> F
    image level: mean over (H, W) of x -> ConvBnRelu 1x1 -> F -> broadcast to H x W
    concat (2F = 1024) -> ConvBnRelu 1x1 -> 256 -> Dropout 0.1 -> 1x1 logits

Auxiliary head (CAA repo): ConvBnRelu 1x1 -> 256, dropout 0.1, 1x1 logits, on the **last**
backbone endpoint (the main head's input), loss rate 0.4.

Deviations / UNVERIFIED:
* BN: the reference (Keras/iSeg) uses eps 1e-3 and trains with sync BN momentum 0.9997; every
  BN here, the attention block's included, uses eps 1e-5 and momentum 0.9 (PyTorch 0.1) like
  the rest of the package. ``attention_options`` can restore the reference values there.
* Dropout: the reference uses element-wise ``tf.keras.layers.Dropout`` (0.1) before the
  logits; we use ``SpatialDropout2D`` (Dropout2d) like every other head of this package.
* The reference default output stride is 16 for the CAA model but 8 in the CAR training
  configs (with the aux loss off); we default to 8 with the aux head on, like the rest of the
  package. Pass ``aux_head=False`` for the CAR recipe.
* Final resize: ``tf.image.resize`` bilinear (half-pixel centres), i.e.
  ``align_corners=False``.
"""

import keras
from keras import ops

from keras_segattn import layers as sa_layers
from keras_segattn.heads.fcn_head import (
    ClassifierHead, FCNHead, check_activation, check_num_classes, check_rank4,
)
from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.models.base import (
    SegmentationModel, build_trunk, register_model, resolve_backbone, upsample_logits,
)


@keras.saving.register_keras_serializable(package="keras_segattn")
class CAAHead(ClassifierHead):
    """CAA head: channelized axial attention + image-level context, then the classifier.

    ``y = cls(Drop(CBR_1x1(concat([CBR_1x1(CAA(CBR_3x3(x))), broadcast(CBR_1x1(mean_hw(x)))]))))``
    with ``CBR`` = conv (no bias) -> BN(eps 1e-5) -> activation.

    Input: the last backbone feature ``(B, H, W, C)``; output float32 logits
    ``(B, H, W, num_classes)`` (no upsampling).

    Args:
        num_classes: int.
        filters: int, width F of the attention branch and the image-level branch. Default 512.
        channels: int, width of the fusion conv before the classifier. Default 256.
        dropout: float, Dropout2d rate. Default 0.1.
        activation: ``"relu"`` (reference) or ``"leaky_relu"`` (slope 0.01).
        attention_options: dict of extra ``ChannelizedAxialAttention`` arguments, or
            ``None``: query/key 64 channels, gate MLP 5 x ``0.25 F``, ``query_group_size``
            16, and BN ``epsilon=1e-5``, ``momentum=0.9`` like the rest of the head (pass
            ``{"epsilon": 1e-3, "momentum": 0.9997}`` for the reference's Keras/iSeg BN).

    Example:
    >>> CAAHead(19, filters=16, channels=8)(keras.ops.ones((1, 6, 5, 32))).shape
    (1, 6, 5, 19)
    """

    def __init__(self, num_classes, filters=512, channels=256, dropout=0.1, activation="relu",
                 attention_options=None, **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        if attention_options is not None and not isinstance(attention_options, dict):
            raise TypeError(
                f"CAAHead: attention_options must be a dict or None, got {attention_options!r}."
            )
        if attention_options and "filters" in attention_options:
            raise ValueError(
                "CAAHead: set the attention width with `filters`, not attention_options['filters']."
            )
        self.filters = int(filters)
        self.channels = int(channels)
        self.attention_options = dict(attention_options or {})
        block = dict(activation=activation, dtype=self.dtype_policy)
        self.entry = ConvBNAct(self.filters, kernel_size=3, name="entry", **block)
        self.attention = sa_layers.ChannelizedAxialAttention(
            **self._attention_kwargs(), dtype=self.dtype_policy, name="attention"
        )
        self.end = ConvBNAct(self.filters, kernel_size=1, name="end", **block)
        self.image_level = ConvBNAct(self.filters, kernel_size=1, name="image_level", **block)
        self.fuse = ConvBNAct(self.channels, kernel_size=1, name="fuse", **block)
        self._make_classifier("conv_seg")

    def _attention_kwargs(self):
        kwargs = dict(filters=self.filters, epsilon=1e-5, momentum=0.9)
        kwargs.update(self.attention_options)
        return kwargs

    def build(self, input_shape):
        check_rank4("CAAHead", input_shape)
        shape = (input_shape[0], None, None, input_shape[-1])
        inner = shape[:3] + (self.filters,)
        self.entry.build(shape)
        self.attention.build(inner)
        attention_channels = self.attention.compute_output_shape(inner)[-1]
        self.end.build(shape[:3] + (attention_channels,))
        self.image_level.build((input_shape[0], 1, 1, input_shape[-1]))
        self.fuse.build(shape[:3] + (2 * self.filters,))
        self.conv_seg.build(shape[:3] + (self.channels,))
        self.built = True

    def call(self, inputs, training=None):
        x = self.entry(inputs, training=training)
        x = ops.cast(self.attention(x, training=training), x.dtype)
        x = self.end(x, training=training)
        # Image-level context on the head input: (B, H, W, C) -> (B, 1, 1, F) -> (B, H, W, F).
        pooled = ops.mean(inputs, axis=(1, 2), keepdims=True)
        pooled = self.image_level(pooled, training=training)
        pooled = ops.zeros_like(x[..., :1]) + pooled
        x = self.fuse(ops.concatenate([x, pooled], axis=-1), training=training)
        return self._classify(x, training)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "channels": self.channels,
                       "attention_options": dict(self.attention_options) or None})
        return config


def caa_aux_head(num_classes, channels=256, dropout=0.1, activation="relu", name="aux_head"):
    """The CAA repo's auxiliary head: ConvBnRelu 1x1 -> ``channels``, dropout, 1x1 logits."""
    return FCNHead(num_classes, channels=channels, num_convs=1, kernel_size=1,
                   concat_input=False, dropout=dropout, activation=activation, name=name)


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class CAANet(SegmentationModel):
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
        check_num_classes("CAANet", num_classes)
        check_activation("CAANet", activation)
        head = CAAHead(num_classes, filters=filters, channels=channels, dropout=dropout,
                       activation=activation, attention_options=attention_options, name="head")
        backbone_model = resolve_backbone(backbone, output_stride=output_stride,
                                          input_shape=input_shape, weights=backbone_weights)
        inputs, features = build_trunk(backbone_model, input_shape)
        logits = {"logits": head(features["P5"])}
        loss_weights = {"logits": 1.0}
        if aux_head:
            aux = caa_aux_head(num_classes, channels=channels, dropout=dropout,
                               activation=activation)
            logits["aux"] = aux(features["P5"])
            loss_weights["aux"] = float(aux_loss_weight)
        super().__init__(
            inputs=inputs,
            outputs=upsample_logits(logits, inputs, align_corners),
            backbone=backbone_model,
            num_classes=num_classes,
            loss_weights=loss_weights,
            init_config=dict(
                num_classes=num_classes, output_stride=output_stride, aux_head=aux_head,
                input_shape=tuple(input_shape), backbone_weights=backbone_weights,
                align_corners=align_corners, filters=filters, channels=channels,
                dropout=dropout, activation=activation, attention_options=attention_options,
                aux_loss_weight=aux_loss_weight,
            ),
            **kwargs,
        )

"""Attention to Scale: a shared network over several input scales, merged by learned attention.

Liang-Chieh Chen, Yi Yang, Jiang Wang, Wei Xu, Alan L. Yuille, "Attention to Scale:
Scale-aware Semantic Image Segmentation", CVPR 2016, arXiv:1511.03339.

**No official code was located** (DeepLab Caffe prototxts, mechanisms.md section 9). The
formulation follows the paper ([recalled, UNVERIFIED] where marked there)::

    for each scale s in (1, 0.75, 0.5):          (one shared backbone + head)
        x^s = Resize(scale=s)(image)
        fc7^s, f^s = head(backbone(x^s))          features and score maps
    all fc7^s, f^s bilinearly resized to the scale-1 feature resolution
    w^s = softmax_s(AttentionNet(concat_s fc7^s))     (3x3 conv 512 -> ReLU -> 1x1 conv S)
    g   = sum_s w^s f^s                           merged score map ("logits")

Training uses **extra supervision**: a softmax cross-entropy on the merged output plus one
loss per scale output (1 + S losses, all weight 1.0 [recalled, UNVERIFIED]).

Deviations / our choices (UNVERIFIED or not from the paper):
* The paper's network is DeepLab-LargeFOV on VGG-16 (fc6: 3x3 dilation 12, 1024; fc7: 1x1,
  1024; fc8: classes). Here the backbone is a dilated ResNet and the per-scale head is
  ``AttentionToScaleHead``: 3x3 conv-BN-act (``channels``) -> 1x1 conv-BN-act (``channels``,
  the "fc7" features fed to the attention net) -> Dropout2d -> 1x1 classifier ("fc8").
* Resizes use ``align_corners=True`` by default (Caffe's ``Interp`` layer aligns corners);
  the input images are shrunk with ``Resize(scale=s)`` (``floor(H * s)``, no antialiasing).
"""

import keras

from keras_segattn import layers as sa_layers
from keras_segattn.heads.fcn_head import ClassifierHead, check_num_classes, check_rank4
from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.layers.normalization import ImageNormalization
from keras_segattn.layers.resize import Resize
from keras_segattn.models.base import (
    MAIN_OUTPUT, SegmentationModel, register_model, resolve_backbone,
)


def scale_output_name(scale):
    """Output name of the per-scale score map: ``1.0 -> "scale_100"``, ``0.75 -> "scale_075"``."""
    return f"scale_{int(round(float(scale) * 100)):03d}"


def _check_scales(scales):
    if isinstance(scales, (int, float)) or not scales:
        raise ValueError(f"AttentionToScale: scales must be a non-empty list, got {scales!r}.")
    scales = tuple(float(s) for s in scales)
    if any(not s > 0 for s in scales):
        raise ValueError(f"AttentionToScale: every scale must be positive, got {scales}.")
    if 1.0 not in scales:
        raise ValueError(
            f"AttentionToScale: scales must include 1.0 (the merge resolution), got {scales}."
        )
    names = [scale_output_name(s) for s in scales]
    if len(set(names)) != len(names):
        raise ValueError(
            f"AttentionToScale: scales must differ by at least 0.01, got {scales}."
        )
    return scales


@keras.saving.register_keras_serializable(package="keras_segattn")
class AttentionToScaleHead(ClassifierHead):
    """The per-scale head shared by every scale: returns ``(scores, features)``.

    ``features = CBR_1x1(CBR_3x3(x))`` (the paper's fc6/fc7 role), ``scores =
    conv1x1(Dropout2d(features))`` (fc8); ``CBR`` = conv (no bias) -> BN(eps 1e-5) -> act.

    Input ``(B, H, W, C)``; outputs float32 ``(B, H, W, num_classes)`` and
    ``(B, H, W, channels)`` in the compute dtype.

    Args:
        num_classes: int.
        channels: int, width of both convs. Default 512.
        dropout: float, Dropout2d rate before the classifier. Default 0.1.
        activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.01).

    Example:
    >>> scores, feats = AttentionToScaleHead(5, channels=8)(keras.ops.ones((1, 6, 5, 16)))
    >>> scores.shape, feats.shape
    ((1, 6, 5, 5), (1, 6, 5, 8))
    """

    def __init__(self, num_classes, channels=512, dropout=0.1, activation="relu", **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        self.channels = int(channels)
        self.conv_a = ConvBNAct(self.channels, kernel_size=3, activation=activation,
                                dtype=self.dtype_policy, name="conv_a")
        self.conv_b = ConvBNAct(self.channels, kernel_size=1, activation=activation,
                                dtype=self.dtype_policy, name="conv_b")
        self._make_classifier("conv_seg")

    def build(self, input_shape):
        check_rank4("AttentionToScaleHead", input_shape)
        shape = (input_shape[0], None, None, input_shape[-1])
        inner = shape[:3] + (self.channels,)
        self.conv_a.build(shape)
        self.conv_b.build(inner)
        self.conv_seg.build(inner)
        self.built = True

    def call(self, inputs, training=None):
        features = self.conv_b(self.conv_a(inputs, training=training), training=training)
        return self._classify(features, training), features

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape[:3]) + (self.num_classes,),
                tuple(input_shape[:3]) + (self.channels,))

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels})
        return config


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class AttentionToScale(SegmentationModel):
    """Attention to Scale (Chen et al., CVPR 2016) on a dilated ResNet.

    One backbone and one ``AttentionToScaleHead`` are shared by every scale; the per-scale
    score maps are merged by ``keras_segattn.layers.ScaleAttention`` (see the module
    docstring).

    Outputs (dict of float32 logits at the input resolution):

    * ``"logits"``: the attention-merged score map; loss weight 1.0.
    * one output per scale, named by ``scale_output_name``: ``"scale_100"``,
      ``"scale_075"``, ``"scale_050"`` for the default scales (the extra supervision);
      loss weight ``scale_loss_weight`` (1.0) each. Only when ``aux_head``.

    Args:
        num_classes: int.
        backbone: backbone name or model. Default ``"resnet50"`` (the paper: VGG-16
            DeepLab-LargeFOV).
        output_stride: 8 (default, as DeepLab), 16 or 32.
        aux_head: bool, the per-scale outputs (extra supervision). Default True.
        input_shape: ``(H, W, 3)``; ``None`` sizes allowed.
        backbone_weights: backbone weights (``None``: random init).
        align_corners: bool, every bilinear resize of score maps/features. Default True.
        scales: input scales; must include 1.0. Default ``(1.0, 0.75, 0.5)``.
        channels: int, width of the shared head. Default 512.
        attention_channels: int, hidden width of the attention net. Default 512 (paper).
        dropout: float, Dropout2d rate before the classifier. Default 0.1.
        attention_dropout: float, dropout in the attention net. Default 0.0 (UNVERIFIED).
        activation: ``"relu"`` or ``"leaky_relu"``.
        scale_loss_weight: float, loss weight of each per-scale output. Default 1.0.

    Example:
    >>> model = AttentionToScale(num_classes=7, backbone="resnet_tiny")  # doctest: +SKIP
    >>> sorted(model.segmentation_output_names)  # doctest: +SKIP
    ['logits', 'scale_050', 'scale_075', 'scale_100']
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=True,
                 scales=(1.0, 0.75, 0.5), channels=512, attention_channels=512, dropout=0.1,
                 attention_dropout=0.0, activation="relu", scale_loss_weight=1.0, **kwargs):
        check_num_classes("AttentionToScale", num_classes)
        scales = _check_scales(scales)
        head = AttentionToScaleHead(num_classes, channels=channels, dropout=dropout,
                                    activation=activation, name="head")
        attention = sa_layers.ScaleAttention(hidden_filters=int(attention_channels),
                                             dropout=attention_dropout, name="scale_attention")
        backbone_model = resolve_backbone(backbone, output_stride=output_stride,
                                          input_shape=input_shape, weights=backbone_weights)
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}.")
        if "P5" not in backbone_model.pyramid_level_inputs:
            raise ValueError("AttentionToScale: the backbone must expose 'P5' in pyramid_level_inputs.")

        # The same trunk as base.build_trunk, but the extractor is applied once per scale.
        inputs = keras.Input(shape=input_shape, name="images")
        extractor = keras.Model(
            backbone_model.inputs,
            backbone_model.get_layer(backbone_model.pyramid_level_inputs["P5"]).output,
            name="backbone",
        )
        normalized = ImageNormalization(name="normalize")(inputs)
        scores, features = {}, {}
        for scale in scales:
            key = scale_output_name(scale)
            x = normalized
            if scale != 1.0:
                x = Resize(scale=scale, name=f"{key}_input")(normalized)
            scores[key], features[key] = head(extractor(x))
        reference = features[scale_output_name(1.0)]
        for key in scores:
            if key != scale_output_name(1.0):
                resize = dict(align_corners=align_corners)
                scores[key] = Resize(dtype="float32", name=f"{key}_scores", **resize)(
                    scores[key], reference)
                features[key] = Resize(name=f"{key}_features", **resize)(features[key], reference)
        merged = attention([scores[k] for k in scores], [features[k] for k in features])
        logits = {MAIN_OUTPUT: merged}
        loss_weights = {MAIN_OUTPUT: 1.0}
        if aux_head:
            for key in scores:
                logits[key] = scores[key]
                loss_weights[key] = float(scale_loss_weight)
        self._init_from_logits(
            inputs, logits, backbone=backbone_model, num_classes=num_classes,
            loss_weights=loss_weights, align_corners=align_corners,
            init_config=dict(
                num_classes=num_classes, output_stride=output_stride, aux_head=aux_head,
                input_shape=input_shape, backbone_weights=backbone_weights,
                align_corners=align_corners, scales=list(scales), channels=channels,
                attention_channels=attention_channels, dropout=dropout,
                attention_dropout=attention_dropout, activation=activation,
                scale_loss_weight=scale_loss_weight,
            ),
            **kwargs,
        )

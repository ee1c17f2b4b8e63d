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
  ``heads.AttentionToScaleHead``: 3x3 conv-BN-act (``channels``) -> 1x1 conv-BN-act
  (``channels``, the "fc7" features fed to the attention net) -> Dropout2d -> 1x1
  classifier ("fc8").

The model is a multi-scale wrapper around a segmenter: ``Segmenter`` with the per-scale head
as its decode head, whose decode step (``_decode``) runs the shared backbone and head over the
scales and merges them with ``layers.ScaleAttention``; normalisation, the final resize, the
recipe, saving and export are ``Segmenter``'s.
* Resizes use ``align_corners=True`` by default (Caffe's ``Interp`` layer aligns corners);
  the input images are shrunk with ``Resize(scale=s)`` (``floor(H * s)``, no antialiasing).
"""

import keras

from keras_segattn import heads
from keras_segattn import layers as sa_layers
from keras_segattn.common import MAIN_OUTPUT
from keras_segattn.layers.resize import Resize
from keras_segattn.models.base import NamedSegmenter, constructor_arguments, register_model


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


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class AttentionToScale(NamedSegmenter):
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
        scales = _check_scales(scales)
        arguments = constructor_arguments(locals())
        arguments["scales"] = list(scales)
        head = heads.AttentionToScaleHead(num_classes, channels=channels, dropout=dropout,
                                          activation=activation, name="head")
        # Read by _decode while the graph is built (before keras.Model.__init__).
        self._multiscale = dict(
            scales=scales, scale_outputs=bool(aux_head), scale_loss_weight=float(scale_loss_weight),
            attention=sa_layers.ScaleAttention(hidden_filters=int(attention_channels),
                                               dropout=attention_dropout,
                                               name="scale_attention"))
        super().__init__(arguments, decode_head=head, **kwargs)

    def _decode(self, images, extractor, heads, align_corners):
        """The shared backbone and head on every scale, merged by ``ScaleAttention``::

            x^s = Resize(scale=s)(images); scores^s, features^s = head(backbone(x^s)["P5"])
            scores^s, features^s resized to the scale-1 feature size (s != 1)
            logits = sum_s softmax_s(attention(features))^s * scores^s
        """
        options, head = self._multiscale, heads[0]
        fixed_size = tuple(extractor.input_shape[1:3])
        if len(options["scales"]) > 1 and fixed_size != (None, None):
            raise ValueError(
                f"AttentionToScale runs the backbone on the images scaled by "
                f"{options['scales']}, but this backbone takes images of one size, "
                f"{fixed_size}: use a backbone that takes any size, or scales=(1.0,)."
            )
        scores, features = {}, {}
        for scale in options["scales"]:
            key = scale_output_name(scale)
            x = images if scale == 1.0 else Resize(scale=scale, name=f"{key}_input")(images)
            scores[key], features[key] = head(extractor(x)[head.in_levels[0]])
        reference = features[scale_output_name(1.0)]
        for key in scores:
            if key != scale_output_name(1.0):
                scores[key] = Resize(align_corners=align_corners, dtype="float32",
                                     name=f"{key}_scores")(scores[key], reference)
                features[key] = Resize(align_corners=align_corners,
                                       name=f"{key}_features")(features[key], reference)
        merged = options["attention"](list(scores.values()), list(features.values()))
        logits, loss_weights = {MAIN_OUTPUT: merged}, {MAIN_OUTPUT: 1.0}
        if options["scale_outputs"]:
            logits.update(scores)
            loss_weights.update({key: options["scale_loss_weight"] for key in scores})
        return logits, loss_weights

"""Attention-to-Scale head: the per-scale score head shared by every input scale.

Liang-Chieh Chen, Yi Yang, Jiang Wang, Wei Xu, Alan L. Yuille, "Attention to Scale:
Scale-aware Semantic Image Segmentation", CVPR 2016, arXiv:1511.03339. No official code was
located (DeepLab Caffe prototxts, mechanisms.md section 9): the paper's fc6/fc7/fc8 on
DeepLab-LargeFOV become, on a dilated ResNet, 3x3 conv-BN-act -> 1x1 conv-BN-act (the "fc7"
features fed to the attention net) -> Dropout2d -> 1x1 classifier ("fc8"). The multi-scale
model is ``keras_segattn.models.AttentionToScale``.
"""

import keras

from keras_segattn.heads.base import Head, check_rank4
from keras_segattn.layers.conv_bn_act import ConvBNAct


@keras.saving.register_keras_serializable(package="keras_segattn")
class AttentionToScaleHead(Head):
    """The per-scale head shared by every scale: returns ``(scores, features)``.

    Called on the feature dict (a single-scale segmenter) it returns ``{"logits": scores}``;
    called on a tensor, ``(scores, features)`` (the multi-scale ``AttentionToScale`` model
    merges the scores with attention computed from the features).

    ``features = CBR_1x1(CBR_3x3(x))`` (the paper's fc6/fc7 role), ``scores =
    conv1x1(Dropout2d(features))`` (fc8); ``CBR`` = conv (no bias) -> BN(eps 1e-5) -> act.

    Input ``(B, H, W, C)``; outputs float32 ``(B, H, W, num_classes)`` and
    ``(B, H, W, channels)`` in the compute dtype.

    Args:
        num_classes: int.
        channels: int, width of both convs. Default 512.
        dropout: float, Dropout2d rate before the classifier. Default 0.1.
        activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.01).
        in_levels, output_names, loss_weights: see ``Head``.

    Example:
    >>> scores, feats = AttentionToScaleHead(5, channels=8)(keras.ops.ones((1, 6, 5, 16)))
    >>> tuple(scores.shape), tuple(feats.shape)
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

    def build_head(self, input_shape):
        check_rank4("AttentionToScaleHead", input_shape)
        shape = (input_shape[0], None, None, input_shape[-1])
        inner = shape[:3] + (self.channels,)
        self.conv_a.build(shape)
        self.conv_b.build(inner)
        self.conv_seg.build(inner)

    def decode(self, inputs, training=None):
        features = self.conv_b(self.conv_a(inputs, training=training), training=training)
        return self._classify(features, training), features

    def output_spec(self, inputs):
        shape = tuple(inputs.shape[:3])
        return (keras.KerasTensor(shape + (self.num_classes,), dtype="float32"),
                keras.KerasTensor(shape + (self.channels,), dtype=self.compute_dtype))

    def name_outputs(self, outputs):
        scores, _ = outputs
        return {self.output_names[0]: scores}

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels})
        return config

"""SANet head: four Squeeze-and-Attention blocks on the four stages, merged.

Zhong et al., "Squeeze-and-Attention Networks for Semantic Segmentation", CVPR 2020,
arXiv:1909.03402; no official code is known (mechanisms.md section 6). One
``layers.SqueezeAttention`` per backbone stage (``P2``..``P5``), the outputs resized to the
finest stage, concatenated and fused by a 1x1 conv-BN-act for the mask; the image-level
(categorical) logits come from the global average of the deepest SA output (UNVERIFIED
choice). The widths (256) and the losses of the model are described in
``keras_segattn.models.sanet``.
"""

import keras
from keras import ops

from keras_segattn import layers as sa_layers
from keras_segattn.heads.base import LEVELS, Head, check_rank4
from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.layers.resize import Resize

IMAGE_OUTPUT = "image_logits"


@keras.saving.register_keras_serializable(package="keras_segattn")
class SANetHead(Head):
    """SANet head: one ``SqueezeAttention`` per backbone stage, merged for the prediction.

    ``s_i = SA_i(P_i)`` for the four stages, ``s_i`` resized (bilinear) to the size of the first
    (finest) feature, ``y = cls(Drop(CBR_1x1(concat(s_1..s_4))))``; and the image-level
    logits ``Dense(mean_hw(s_4))``.

    Reads the four stages ``("P2", "P3", "P4", "P5")``. Called on the feature dict it returns
    ``{"logits": (B, H2, W2, num_classes), "image_logits": (B, num_classes)}`` (float32, at
    the first feature's size; ``"image_logits"`` only with ``image_output``); called on a
    list of the four stage features (finest first) it returns ``(logits, image_logits)``.

    Args:
        num_classes: int.
        stage_channels: int, output width of each SA head. Default 256 (UNVERIFIED).
        channels: int, width of the 1x1 fusion conv. Default 256 (UNVERIFIED).
        dropout: float, Dropout2d rate. Default 0.1.
        activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.01) for the fusion conv.
        align_corners: bool, resize of the stage outputs. Default False.
        image_output: bool, emit ``"image_logits"`` in the dict form (the categorical
            loss's input). Default True. The image classifier's weights exist either way
            (so ``SANet(categorical_loss=False)`` keeps the variables of ``SANet()``).
        in_levels, output_names, loss_weights: see ``Head`` (output names
            ``("logits", "image_logits")``).

    Example:
    >>> feats = [keras.ops.ones((1, s, s, c)) for s, c in ((8, 8), (4, 16), (4, 16), (4, 32))]
    >>> [tuple(t.shape) for t in SANetHead(5, stage_channels=8, channels=8)(feats)]
    [(1, 8, 8, 5), (1, 5)]
    """

    default_in_levels = LEVELS
    default_output_names = ("logits", IMAGE_OUTPUT)

    def __init__(self, num_classes, stage_channels=256, channels=256, dropout=0.1,
                 activation="relu", align_corners=False, image_output=True, **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        self.image_output = bool(image_output)
        self.stage_channels = int(stage_channels)
        self.channels = int(channels)
        self.align_corners = bool(align_corners)
        self.squeeze_attention = [
            sa_layers.SqueezeAttention(self.stage_channels, dtype=self.dtype_policy,
                                       name=f"sa_{i}")
            for i in range(len(LEVELS))
        ]
        self.resize = Resize(align_corners=self.align_corners, dtype=self.dtype_policy,
                             name="resize")
        self.fuse = ConvBNAct(self.channels, kernel_size=1, activation=activation,
                              dtype=self.dtype_policy, name="fuse")
        self._make_classifier("conv_seg")
        self.image_classifier = keras.layers.Dense(self.num_classes, dtype="float32",
                                                   name="image_classifier")

    def build_head(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != len(LEVELS) \
                or not all(isinstance(shape, (list, tuple)) for shape in input_shape):
            raise ValueError(
                f"SANetHead: expected a list of {len(LEVELS)} stage features, got {input_shape}."
            )
        for block, shape in zip(self.squeeze_attention, input_shape):
            check_rank4("SANetHead", shape)
            block.build((shape[0], None, None, shape[-1]))
        batch = input_shape[0][0]
        self.fuse.build((batch, None, None, len(LEVELS) * self.stage_channels))
        self.conv_seg.build((batch, None, None, self.channels))
        self.image_classifier.build((batch, self.stage_channels))

    def decode(self, inputs, training=None):
        finest = inputs[0]
        merged = []
        for block, feature in zip(self.squeeze_attention, inputs):
            out = ops.cast(block(feature, training=training), finest.dtype)
            merged.append(out)
        # Image-level (categorical) branch on the deepest SA output: (B, h, w, C) -> (B, K).
        image_logits = self.image_classifier(ops.mean(merged[-1], axis=(1, 2)))
        merged = [merged[0]] + [self.resize(out, finest) for out in merged[1:]]
        x = self.fuse(ops.concatenate(merged, axis=-1), training=training)
        return self._classify(x, training), image_logits

    def output_spec(self, inputs):
        first = inputs[0].shape
        return (keras.KerasTensor(tuple(first[:3]) + (self.num_classes,), dtype="float32"),
                keras.KerasTensor((first[0], self.num_classes), dtype="float32"))

    def name_outputs(self, outputs):
        logits, image_logits = outputs
        named = {self.output_names[0]: logits}
        if self.image_output:
            named[self.output_names[1]] = image_logits
        return named

    def get_config(self):
        config = super().get_config()
        config.update({"stage_channels": self.stage_channels, "channels": self.channels,
                       "align_corners": self.align_corners, "image_output": self.image_output})
        return config

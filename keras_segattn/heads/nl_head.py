"""Non-local head (mmsegmentation ``NLHead``): FCNHead with a NonLocal2d between its convs.

Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018 (arXiv 1711.07971).
Reference: open-mmlab/mmsegmentation ``mmseg/models/decode_heads/nl_head.py`` (@ ``1cd613fa``)
with mmcv ``NonLocal2d`` (embedded Gaussian, reduction 2, ``use_scale=True``).
"""

import keras

from keras_segattn import convert
from keras_segattn.heads.fcn_head import FCNHead
from keras_segattn.layers.non_local import NonLocalBlock


@keras.saving.register_keras_serializable(package="keras_segattn")
class NLHead(FCNHead):
    """``convs[0] -> NonLocal2d -> convs[1] -> conv_cat(concat([x, .])) -> Dropout2d -> 1x1``.

    Input ``(B, H, W, C)``; output float32 logits ``(B, H, W, num_classes)``.

    Args:
        num_classes: int.
        channels: conv width (512).
        reduction: non-local inter-channel reduction (2).
        use_scale: scale the energies by ``inter**-0.5`` (True).
        concat_input, dropout, activation, kernel_size: as ``FCNHead`` (True, 0.1, "relu", 3).

    Reference weights: mmseg ``NLHead`` keys (``convs.0.conv.weight``, ``nl_block.g.conv.*``,
    ``nl_block.conv_out.bn.*``, ``conv_cat.*``, ``conv_seg.*``).

    Example:
    >>> head = NLHead(19, channels=16)
    >>> tuple(head(keras.ops.ones((1, 8, 8, 32))).shape)
    (1, 8, 8, 19)
    """

    def __init__(self, num_classes, channels=512, reduction=2, use_scale=True, kernel_size=3,
                 concat_input=True, dropout=0.1, activation="relu", **kwargs):
        kwargs.pop("num_convs", None)
        super().__init__(num_classes, channels=channels, num_convs=2, kernel_size=kernel_size,
                         concat_input=concat_input, dropout=dropout, activation=activation,
                         **kwargs)
        self.reduction = int(reduction)
        self.use_scale = bool(use_scale)
        self.nl_block = NonLocalBlock(reduction=self.reduction, use_scale=self.use_scale,
                                      dtype=self.dtype_policy, name="nl_block")

    def build_head(self, input_shape):
        super().build_head(input_shape)
        self.nl_block.build(tuple(input_shape[:3]) + (self.channels,))

    def decode(self, inputs, training=None):
        x = self.convs[0](inputs, training=training)
        x = self.nl_block(x, training=training)
        x = self.convs[1](x, training=training)
        return self._fuse_and_classify(inputs, x, training)

    def reference_weight_mapping(self, source=None):
        """mmseg ``NLHead`` keys (for ``source`` ``None`` and ``"mmseg"`` alike)."""
        mapping = super().reference_weight_mapping(source)
        mapping.update(convert.prefixed("nl_block", self.nl_block.reference_weight_mapping()))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.pop("num_convs", None)
        config.pop("dilation_rate", None)
        config.pop("use_bias", None)
        config.update({"reduction": self.reduction, "use_scale": self.use_scale})
        return config

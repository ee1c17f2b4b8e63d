"""FCN head (mmsegmentation ``FCNHead``), also used as the auxiliary / "dsn" head.

Reference: open-mmlab/mmsegmentation ``mmseg/models/decode_heads/fcn_head.py`` (@ ``1cd613fa``):
``num_convs`` ConvModules (kxk conv no bias -> BN -> ReLU), optional ``conv_cat`` on
``concat([x, convs(x)])``, ``Dropout2d(0.1)``, 1x1 ``conv_seg`` with bias. Long et al., "Fully
Convolutional Networks for Semantic Segmentation", CVPR 2015 (arXiv 1411.4038).
"""

import keras

from keras_segattn import convert
from keras_segattn.heads.base import Head, check_rank4
from keras_segattn.layers.conv_bn_act import ConvBNAct


@keras.saving.register_keras_serializable(package="keras_segattn")
class FCNHead(Head):
    """mmsegmentation ``FCNHead``: convs -> [concat input -> conv_cat] -> dropout -> 1x1.

    ``y = conv_seg(Dropout2d(conv_cat(concat([x, convs(x)]))))`` (``conv_cat`` only with
    ``concat_input``); each conv is ``kxk conv -> BN(eps 1e-5) -> activation``.

    Input ``(B, H, W, C)``; output float32 logits ``(B, H, W, num_classes)`` (no upsampling).

    Args:
        num_classes: int.
        channels: int, width of the convs. Default 512 (mmseg decode head; 256 for the aux head).
        num_convs: int >= 0. Default 2 (0 requires C == channels).
        kernel_size: int. Default 3.
        dilation_rate: int. Default 1.
        concat_input: bool, concatenate the input before the classifier. Default True.
        dropout: float, channel dropout (Dropout2d) rate. Default 0.1.
        activation: ``"relu"`` (mmseg) or ``"leaky_relu"`` (InPlaceABN slope 0.01).
        use_bias: bool, conv bias in the ConvBNAct blocks. Default False (mmseg); the
            official CCNet/ISANet "dsn" aux head uses True.
        in_levels, output_names, loss_weights: see ``Head`` (``("P5",)``, ``"logits"``, 1.0;
            ``auxiliary_fcn_head`` gives the auxiliary head on ``P4``).

    Reference weights: mmseg keys ``convs.{i}.conv.weight``, ``convs.{i}.bn.*``,
    ``conv_cat.conv.weight``, ``conv_cat.bn.*``, ``conv_seg.{weight,bias}``.

    Example:
    >>> head = FCNHead(19, channels=16)
    >>> tuple(head(keras.ops.ones((1, 8, 8, 32))).shape)
    (1, 8, 8, 19)
    """

    def __init__(self, num_classes, channels=512, num_convs=2, kernel_size=3, dilation_rate=1,
                 concat_input=True, dropout=0.1, activation="relu", use_bias=False, **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        if int(num_convs) < 0:
            raise ValueError(f"{type(self).__name__}: num_convs must be >= 0, got {num_convs!r}.")
        self.channels = int(channels)
        self.num_convs = int(num_convs)
        self.kernel_size = int(kernel_size)
        self.dilation_rate = int(dilation_rate)
        self.concat_input = bool(concat_input)
        self.use_bias = bool(use_bias)
        block = dict(kernel_size=self.kernel_size, dilation_rate=self.dilation_rate,
                     use_bias=self.use_bias, activation=activation, dtype=self.dtype_policy)
        self.convs = [ConvBNAct(self.channels, name=f"convs_{i}", **block)
                      for i in range(self.num_convs)]
        self.conv_cat = ConvBNAct(self.channels, name="conv_cat", **block) if self.concat_input else None
        self._make_classifier("conv_seg")

    def build_head(self, input_shape):
        in_channels = check_rank4(type(self).__name__, input_shape)
        if self.num_convs == 0 and in_channels != self.channels:
            raise ValueError(
                f"FCNHead: num_convs=0 needs input channels == channels ({self.channels}), got "
                f"{in_channels}; set channels={in_channels} or num_convs >= 1."
            )
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = shape[:3] + (self.channels,)
        if self.conv_cat is not None:
            self.conv_cat.build(shape[:3] + (in_channels + self.channels,))
        self.conv_seg.build(shape[:3] + (self.channels,))

    def decode(self, inputs, training=None):
        x = inputs
        for conv in self.convs:
            x = conv(x, training=training)
        return self._fuse_and_classify(inputs, x, training)

    def _fuse_and_classify(self, inputs, x, training=None):
        """``conv_seg(Dropout2d(conv_cat(concat([inputs, x]))))`` (``conv_cat`` if any)."""
        if self.conv_cat is not None:
            x = self.conv_cat(keras.ops.concatenate([inputs, x], axis=-1), training=training)
        return self._classify(x, training)

    def reference_weight_mapping(self, source=None):
        """mmseg ``FCNHead`` keys (the official FCN-D8 is mmseg's, so ``source`` ``None``
        and ``"mmseg"`` give the same keys; ``"mmseg"`` also checks the head is mmseg's:
        ReLU, convs without bias)."""
        if source == "mmseg":
            check_mmseg_head(self)
            if self.use_bias:
                raise ValueError(
                    f"{type(self).__name__} {self.name!r}: mmseg's FCNHead convs have no bias; "
                    "build it with use_bias=False (CCNet: aux_use_bias=False), or the model "
                    "with aux_head=False and drop the checkpoint's 'auxiliary_head.*' keys."
                )
        mapping = {}
        for i, conv in enumerate(self.convs):
            mapping.update(conv.reference_weight_mapping(f"convs.{i}.conv", f"convs.{i}.bn"))
        if self.conv_cat is not None:
            mapping.update(self.conv_cat.reference_weight_mapping("conv_cat.conv", "conv_cat.bn"))
        mapping.update(convert.conv_mapping("conv_seg", self.conv_seg))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({
            "channels": self.channels, "num_convs": self.num_convs,
            "kernel_size": self.kernel_size, "dilation_rate": self.dilation_rate,
            "concat_input": self.concat_input, "use_bias": self.use_bias,
        })
        return config


def auxiliary_fcn_head(num_classes, channels=256, kernel_size=3, dropout=0.1, activation="relu",
                       use_bias=False, in_level="P4", output_name="aux", loss_weight=0.4,
                       name="aux_head"):
    """mmsegmentation's auxiliary ``FCNHead``: one ``kernel_size`` ConvModule (``channels``),
    no concat, Dropout2d(``dropout``), 1x1 classifier, on stage 3 (``P4``), output ``"aux"``
    with loss weight 0.4 (mmseg's ``auxiliary_head``).

    ``use_bias=True`` gives the conv a bias (the "dsn" head of the official CCNet/ISANet);
    ``kernel_size=1, in_level="P5"`` is the CAA repository's auxiliary head.
    """
    return FCNHead(num_classes, channels=channels, num_convs=1, kernel_size=kernel_size,
                   concat_input=False, dropout=dropout, activation=activation,
                   use_bias=use_bias, in_levels=(in_level,), output_names=(output_name,),
                   loss_weights=loss_weight, name=name)


def check_mmseg_head(head):
    """mmsegmentation heads use ReLU: refuse a head built with another activation."""
    if head.activation != "relu":
        raise ValueError(
            f"{type(head).__name__} {head.name!r}: mmsegmentation heads use ReLU, but it was "
            f"built with activation={head.activation!r}; build the model with "
            "activation='relu' to load an mmseg checkpoint."
        )

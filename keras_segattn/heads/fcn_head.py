"""FCN head (mmsegmentation ``FCNHead``), also used as the auxiliary / "dsn" head.

Reference: open-mmlab/mmsegmentation ``mmseg/models/decode_heads/fcn_head.py`` (@ ``1cd613fa``):
``num_convs`` ConvModules (kxk conv no bias -> BN -> ReLU), optional ``conv_cat`` on
``concat([x, convs(x)])``, ``Dropout2d(0.1)``, 1x1 ``conv_seg`` with bias. Long et al., "Fully
Convolutional Networks for Semantic Segmentation", CVPR 2015 (arXiv 1411.4038).
"""

import keras

from keras_segattn import convert
from keras_segattn.layers.conv_bn_act import ConvBNAct


def check_activation(owner, activation):
    if activation not in ("relu", "leaky_relu"):
        raise ValueError(
            f"{owner}: activation must be 'relu' or 'leaky_relu' (slope 0.01, InPlaceABN), "
            f"got {activation!r}."
        )


def check_num_classes(owner, num_classes):
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"{owner}: num_classes must be a positive integer, got {num_classes!r}.")


def check_rank4(owner, input_shape):
    if len(input_shape) != 4 or input_shape[-1] is None:
        raise ValueError(
            f"{owner}: expected a (B, H, W, C) input with known channels, got {input_shape}."
        )


def make_classifier(num_classes, dropout, name, dtype="float32"):
    """``(SpatialDropout2D or None, Conv2D 1x1 with bias)``; the conv runs in float32 so logits
    stay float32 under mixed precision."""
    drop = keras.layers.SpatialDropout2D(dropout, name=f"{name}_dropout") if dropout else None
    conv = keras.layers.Conv2D(num_classes, 1, use_bias=True, dtype=dtype, name=name)
    return drop, conv


def apply_classifier(drop, conv, x, training=None):
    if drop is not None:
        x = drop(x, training=training)
    return conv(x)


class ClassifierHead(keras.layers.Layer):
    """Base of the heads that end in ``Dropout2d -> 1x1 conv`` (float32 logits).

    Validates and stores ``num_classes``, ``dropout`` and ``activation`` (``"relu"`` or
    ``"leaky_relu"``; error messages name the subclass), adds them to ``get_config`` and
    defaults ``compute_output_shape`` to per-pixel logits at the input size. A subclass
    stores its own arguments, creates its blocks, then calls ``self._make_classifier(name)``
    last (so the classifier stays the last sublayer; a head that ends in another
    ``ClassifierHead``, like ``FLANetHead``, skips it) and extends ``get_config``.

    Args:
        num_classes: int >= 1.
        dropout: float, Dropout2d rate before the classifier.
        activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.01) for the subclass's blocks.
    """

    def __init__(self, num_classes, dropout=0.1, activation="relu", **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_num_classes(owner, num_classes)
        check_activation(owner, activation)
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)
        self.activation = activation

    def _make_classifier(self, name="conv_seg"):
        """Create ``self.drop`` (SpatialDropout2D or None) and ``self.conv_seg`` (1x1, float32)."""
        self.drop, self.conv_seg = make_classifier(self.num_classes, self.dropout, name)

    def _classify(self, x, training=None):
        return apply_classifier(self.drop, self.conv_seg, x, training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "dropout": self.dropout,
                       "activation": self.activation})
        return config


@keras.saving.register_keras_serializable(package="keras_segattn")
class FCNHead(keras.layers.Layer):
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

    Reference weights: mmseg keys ``convs.{i}.conv.weight``, ``convs.{i}.bn.*``,
    ``conv_cat.conv.weight``, ``conv_cat.bn.*``, ``conv_seg.{weight,bias}``.

    Example:
    >>> head = FCNHead(19, channels=16)
    >>> head(keras.ops.ones((1, 8, 8, 32))).shape
    (1, 8, 8, 19)
    """

    def __init__(self, num_classes, channels=512, num_convs=2, kernel_size=3, dilation_rate=1,
                 concat_input=True, dropout=0.1, activation="relu", use_bias=False, **kwargs):
        super().__init__(**kwargs)
        check_activation("FCNHead", activation)
        if int(num_convs) < 0:
            raise ValueError(f"FCNHead: num_convs must be >= 0, got {num_convs!r}.")
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.num_convs = int(num_convs)
        self.kernel_size = int(kernel_size)
        self.dilation_rate = int(dilation_rate)
        self.concat_input = bool(concat_input)
        self.dropout = float(dropout)
        self.activation = activation
        self.use_bias = bool(use_bias)
        block = dict(kernel_size=self.kernel_size, dilation_rate=self.dilation_rate,
                     use_bias=self.use_bias, activation=activation, dtype=self.dtype_policy)
        self.convs = [ConvBNAct(self.channels, name=f"convs_{i}", **block)
                      for i in range(self.num_convs)]
        self.conv_cat = ConvBNAct(self.channels, name="conv_cat", **block) if self.concat_input else None
        self.drop, self.conv_seg = make_classifier(self.num_classes, self.dropout, "conv_seg")

    def build(self, input_shape):
        check_rank4("FCNHead", input_shape)
        in_channels = input_shape[-1]
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
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for conv in self.convs:
            x = conv(x, training=training)
        if self.conv_cat is not None:
            x = self.conv_cat(keras.ops.concatenate([inputs, x], axis=-1), training=training)
        return apply_classifier(self.drop, self.conv_seg, x, training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (self.num_classes,)

    def reference_weight_mapping(self):
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
            "num_classes": self.num_classes, "channels": self.channels,
            "num_convs": self.num_convs, "kernel_size": self.kernel_size,
            "dilation_rate": self.dilation_rate, "concat_input": self.concat_input,
            "dropout": self.dropout, "activation": self.activation, "use_bias": self.use_bias,
        })
        return config

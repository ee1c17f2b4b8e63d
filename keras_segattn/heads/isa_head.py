"""ISANet head: interlaced sparse self-attention module with the concat fusion.

Huang, Yuan, Guo, Zhang, Chen, Wang, "Interlaced Sparse Self-Attention for Semantic
Segmentation", arXiv 1907.12273 (IJCV OCNet). Reference: openseg-group/openseg.pytorch @
``aefc7551``, ``lib/models/modules/isa_block.py`` (``ISA_Module``) and
``lib/models/nets/isanet.py`` (``ISANet``).
"""

import keras

from keras_segattn import convert
from keras_segattn.common import check_activation, pair
from keras_segattn.heads.base import Head, check_rank4, make_classifier
from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.layers.interlaced_sparse_attention import InterlacedSparseAttention


@keras.saving.register_keras_serializable(package="keras_segattn")
class ISAModule(keras.layers.Layer):
    """openseg ``ISA_Module`` with one down factor::

        y = Dropout2d(p)(act(BN(Conv1x1_no_bias(concat([x, ISA_Block(x)])))))

    ``ISA_Block(x)`` (``keras_segattn.layers.InterlacedSparseAttention``) projects to
    ``output_channels`` as upstream's ``ISA_Block(in, key, value, out)``: its long-range
    stage maps C -> ``output_channels``, the short-range stage works on ``output_channels``;
    the fusion conv sees ``C + output_channels`` channels, x FIRST. Input ``(B, H, W, C)``;
    output ``(B, H, W, output_channels)``. (Checked against the official module with
    ``C != output_channels``: golden case ``isa_module_cout``.)

    Args:
        key_channels: int, query/key width of the self-attention (256 in ISANet).
        value_channels: int, value width (512 in ISANet).
        output_channels: int, width after the 1x1 fusion conv (512 in ISANet).
        down_factor: ``(P_h, P_w)`` local block size. Default ``(8, 8)``.
        dropout: float, Dropout2d rate. Default 0.05 (openseg; mmseg 0.1).
        activation: ``"relu"`` (``bn_type="torchbn"``, default) or ``"leaky_relu"``
            (``inplace_abn``, used for the official training).

    Reference weights: openseg ``ISA_Module`` keys ``stages.0.long_range_sa.*``,
    ``stages.0.short_range_sa.*``, ``conv_bn.0.weight``, ``conv_bn.1.0.*``.

    Example:
    >>> module = ISAModule(8, 12, 16, down_factor=(4, 4))
    >>> module(keras.ops.ones((2, 9, 10, 16))).shape
    (2, 9, 10, 16)
    """

    def __init__(self, key_channels, value_channels, output_channels, down_factor=(8, 8),
                 dropout=0.05, activation="relu", **kwargs):
        super().__init__(**kwargs)
        check_activation("ISAModule", activation)
        if isinstance(down_factor, int):
            down_factor = (down_factor, down_factor)
        self.key_channels = int(key_channels)
        self.value_channels = int(value_channels)
        self.output_channels = int(output_channels)
        self.down_factor = tuple(int(f) for f in down_factor)
        self.dropout = float(dropout)
        self.activation = activation
        self.conv_bn = ConvBNAct(self.output_channels, kernel_size=1, activation=activation,
                                 dtype=self.dtype_policy, name="conv_bn")
        self.drop = keras.layers.SpatialDropout2D(self.dropout, name="dropout") if self.dropout else None

    def build(self, input_shape):
        check_rank4("ISAModule", input_shape)
        in_channels = int(input_shape[-1])
        self.block = InterlacedSparseAttention(
            self.key_channels, self.value_channels, output_channels=self.output_channels,
            down_factor=self.down_factor, activation=self.activation,
            dtype=self.dtype_policy, name="isa_block",
        )
        shape = tuple(input_shape)
        self.block.build(shape)
        self.conv_bn.build(shape[:3] + (in_channels + self.output_channels,))
        self.built = True

    def call(self, inputs, training=None):
        context = self.block(inputs, training=training)
        y = self.conv_bn(keras.ops.concatenate([inputs, context], axis=-1), training=training)
        if self.drop is not None:
            y = self.drop(y, training=training)
        return y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (self.output_channels,)

    def reference_weight_mapping(self):
        mapping = convert.prefixed("stages.0", self.block.reference_weight_mapping())
        mapping.update(self.conv_bn.reference_weight_mapping("conv_bn.0", "conv_bn.1.0"))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({
            "key_channels": self.key_channels, "value_channels": self.value_channels,
            "output_channels": self.output_channels, "down_factor": list(self.down_factor),
            "dropout": self.dropout, "activation": self.activation,
        })
        return config


@keras.saving.register_keras_serializable(package="keras_segattn")
class ISAHead(Head):
    """openseg ``ISANet`` head: ``3x3 conv-BN-act -> ISAModule -> 1x1 classifier``.

    Input ``(B, H, W, C)`` (2048 for ResNet C5); output float32 logits
    ``(B, H, W, num_classes)``.

    Args:
        num_classes: int.
        channels: int, width of the in-conv and the module output. Default 512.
        key_channels: int. Default 256 (``channels // 2``).
        value_channels: int. Default 512.
        down_factor: ``(P_h, P_w)``. Default ``(8, 8)``.
        dropout: float, ISAModule Dropout2d. Default 0.05.
        activation: ``"relu"`` or ``"leaky_relu"``. Default ``"relu"``.
        in_levels, output_names, loss_weights: see ``Head``.

    Reference weights: openseg ``ISANet`` keys ``isa_head.0.weight``, ``isa_head.1.0.*``,
    ``isa_head.2.<ISA_Module keys>``, ``cls_head.{weight,bias}``. mmsegmentation's ``ISAHead``
    does not map (``source="mmseg"`` says why).

    Example:
    >>> head = ISAHead(5, channels=16, key_channels=8, value_channels=16, down_factor=(4, 4))
    >>> tuple(head(keras.ops.ones((1, 9, 10, 32))).shape)
    (1, 9, 10, 5)
    """

    def __init__(self, num_classes, channels=512, key_channels=256, value_channels=512,
                 down_factor=(8, 8), dropout=0.05, activation="relu", **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        self.channels = int(channels)
        self.key_channels = int(key_channels)
        self.value_channels = int(value_channels)
        self.down_factor = pair(down_factor, "down_factor", "ISAHead", allow_none=False)
        self.in_conv = ConvBNAct(self.channels, kernel_size=3, activation=activation,
                                 dtype=self.dtype_policy, name="in_conv")
        self.isa = ISAModule(self.key_channels, self.value_channels, self.channels,
                             down_factor=self.down_factor, dropout=self.dropout,
                             activation=activation, dtype=self.dtype_policy, name="isa_module")
        # The module ends in Dropout2d(dropout): no second dropout before the classifier.
        self.drop, self.conv_seg = make_classifier(self.num_classes, 0.0, "conv_seg")

    def build_head(self, input_shape):
        check_rank4("ISAHead", input_shape)
        shape = tuple(input_shape)
        self.in_conv.build(shape)
        self.isa.build(shape[:3] + (self.channels,))
        self.conv_seg.build(shape[:3] + (self.channels,))

    def decode(self, inputs, training=None):
        x = self.in_conv(inputs, training=training)
        x = self.isa(x, training=training)
        return self._classify(x, training)

    def reference_weight_mapping(self, source=None):
        """openseg ``ISANet`` keys; ``source="mmseg"`` raises (see the class docstring)."""
        if source == "mmseg":
            raise ValueError(
                "ISAHead: mmsegmentation's ISAHead cannot be mapped onto this (openseg) head: "
                "mmseg concatenates [attention output, residual] before out_conv (ours, like "
                "openseg, [residual, attention output]) and its value projections have a bias "
                "(openseg's none). Only the backbone ports: load_reference_weights("
                "model.backbone, state_dict, strip_prefix='backbone.') after dropping the "
                "other keys."
            )
        mapping = self.in_conv.reference_weight_mapping("isa_head.0", "isa_head.1.0")
        mapping.update(convert.prefixed("isa_head.2", self.isa.reference_weight_mapping()))
        mapping.update(convert.conv_mapping("cls_head", self.conv_seg))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({
            "channels": self.channels, "key_channels": self.key_channels,
            "value_channels": self.value_channels, "down_factor": list(self.down_factor),
        })
        return config

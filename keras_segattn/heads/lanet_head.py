"""LANet head: DANet's dual head with the Linear Attention Mechanism's modules.

Rui Li, Jianlin Su, Chenxi Duan, Shunyi Zheng, "Linear Attention Mechanism: An Efficient
Attention for Semantic Segmentation", arXiv:2007.14902.

Reference modules: ``lironui/Linear-Attention-Mechanism`` @
``bcf978932c685294cfa2d305dac6e26ccdf55205`` (``PositionLinearAttention``,
``ChannelLinearAttention``; ``keras_segattn.layers.LinearPositionAttention`` /
``LinearChannelAttention``, which fix the reference's H = W restriction). The reference
repository ships the modules only; this head is **our** assembly: the DANet head (Fu et al.,
CVPR 2019, ``junfu1115/DANet`` @ ``b0a0fa00``; ``heads.danet_head.DualAttentionHead``) with its
PAM/CAM replaced by the linear modules, as the follow-up MAResU-Net does for the position
branch. DANet's per-branch outputs (conv6/conv7) are left out: there is no evidence the
linear-attention paper used them.
"""

import keras

from keras_segattn import layers as sa_layers
from keras_segattn.heads.danet_head import DualAttentionHead


@keras.saving.register_keras_serializable(package="keras_segattn")
class LANetHead(DualAttentionHead):
    """DANet-style head with linear position and channel attention.

    ``y = cls(Drop(CBR(LPA(CBR(x))) + CBR(LCA(CBR(x)))))``, ``CBR`` = 3x3 conv (no bias) ->
    BN(eps 1e-5) -> activation, ``inter_channels`` wide.

    Input ``(B, H, W, C)``; output float32 logits ``(B, H, W, num_classes)``.

    Args:
        num_classes: int.
        inter_channels: int or ``None`` (``C // 4``, DANet's choice: 512 for C5 = 2048).
        reduction: int, query/key reduction of the position module. Default 8.
        eps: float, the reference's epsilon in both modules. Default 1e-6.
        dropout: float, Dropout2d rate. Default 0.1.
        activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.01).
        in_levels, output_names, loss_weights: see ``Head``.

    No official head exists, so there are no reference weights for the head (the modules'
    own mappings are ``layers.LinearPositionAttention.reference_weight_mapping`` ...).

    Example:
    >>> tuple(LANetHead(5)(keras.ops.ones((1, 9, 7, 64))).shape)
    (1, 9, 7, 5)
    """

    def __init__(self, num_classes, inter_channels=None, reduction=8, eps=1e-6, dropout=0.1,
                 activation="relu", **kwargs):
        super().__init__(num_classes, inter_channels=inter_channels, reduction=reduction,
                         dropout=dropout, activation=activation, **kwargs)
        self.eps = float(eps)
        self.position_attention = sa_layers.LinearPositionAttention(
            reduction=self.reduction, eps=self.eps, dtype=self.dtype_policy, name="sa")
        self.channel_attention = sa_layers.LinearChannelAttention(
            eps=self.eps, dtype=self.dtype_policy, name="sc")
        self._make_classifier("conv8")

    def attention_layers(self):
        return self.position_attention, self.channel_attention

    def classifiers(self):
        return (self.conv_seg,)

    def decode(self, inputs, training=None):
        sa, sc = self.branches(inputs, training)
        return self._classify(sa + sc, training)

    def get_config(self):
        config = super().get_config()
        config.update({"eps": self.eps})
        return config

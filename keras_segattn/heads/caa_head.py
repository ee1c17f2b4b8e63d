"""CAA head: Channelized Axial Attention (the CAANet decode head).

Ye Huang, Di Kang, Wenjing Jia, Xiangjian He, Liu Liu, "Channelized Axial Attention - Considering
Channel Relation within Spatial Attention for Semantic Segmentation", AAAI 2022,
arXiv:2101.07434.

Reference (TensorFlow 2 / Keras, NHWC): ``edwardyehuang/CAR`` @
``97c90d431ee2e633db407f956704c202d4abf919`` (``heads/caa.py``,
``ChannelizedAxialAttentionHead``; read at ``3b4742587fa42f17434963d506368876d749c4a5``), with
iSeg's ``layers/model_builder.py`` (``ConvBnRelu`` / ``ConvNormAct``, ``ImageLevelBlock``),
``layers/normalizations.py`` and ``layers/core_model_ext.py`` (``SegManaged``, which owns the
1x1 ``logits_conv``). The original CAA repo (``edwardyehuang/CAA`` @ ``74a1de8b``,
``models/modules/caa_head.py`` + ``models/caa.py``) has the same computation under other names
(``entry``/``ca_block``/``end``, ``seg_head_conv`` with dropout 0.1) and the
``hidden_activation`` bug fixed in CAR.

Head (filters F = 512; every ConvBnRelu is conv (no bias, same padding) -> Keras BN
(epsilon 1e-3) -> ReLU)::

    x (last backbone feature)
      attention_entry_conv: ConvBnRelu 3x3 -> F
      caa_block: ChannelizedAxialAttention (vertical then horizontal pass, channel gates)
      attention_end_conv: ConvBnRelu 1x1 -> F
    ImageLevelBlock: mean over (H, W) of x -> ConvBnRelu 1x1 ("conv") -> F -> broadcast to H x W
    concat([attention, image level]) (2F = 1024) -> end_conv: ConvBnRelu 1x1 -> 256
    -> 1x1 logits_conv (with bias)

Auxiliary head (CAA repo): ConvBnRelu 1x1 -> 256, dropout 0.1, 1x1 logits, on the **last**
backbone endpoint (the main head's input), loss rate 0.4. (CAR's optional aux branch is a
ConvBnRelu 3x3 -> 512 on the same feature; its configs train without it.)

Deviations / UNVERIFIED:
* BN: epsilon 1e-3 (iSeg ``normalization()`` / Keras default) in every BN of the head, as in
  the reference, so ported weights reproduce it. Momentum 0.9 (iSeg's ``normalization()``
  default, = PyTorch 0.1); the CAR training configs set ``--bn_momentum=0.9997`` (sync BN,
  batch 16, 30k steps): pass ``momentum=0.9997`` to the head for that recipe.
* Dropout: CAR applies none before ``logits_conv``; the CAA repo applies element-wise
  ``Dropout(0.1)`` after its 256-channel conv. We use ``SpatialDropout2D`` (Dropout2d, rate
  ``dropout``, default 0.1) like every other head of this package; identity at inference.
* The reference default output stride is 16 for the CAA model but 8 in the CAR training
  configs (with the aux loss off); we default to 8 with the aux head on, like the rest of the
  package. Pass ``aux_head=False`` for the CAR recipe.
* Final resize: ``tf.image.resize`` bilinear (half-pixel centres), i.e.
  ``align_corners=False``.
* The image-level branch's BN sees one value per image and channel (the pooled feature), so
  in training it needs at least two images per replica, or synchronized BN over the
  replicas (``TrainConfig(sync_batch_norm=True)``, ``keras-segattn train --sync-bn``): with
  one, the batch variance is 0, the branch outputs its BN ``beta`` whatever the image, and
  its convolution and BN scale get no gradient (Keras BN does this silently, as in the
  reference; PyTorch's BN raises on it; ``keras-segattn train`` warns). The reference
  trains 16 images with sync BN.
"""

import keras
from keras import ops

from keras_segattn import layers as sa_layers
from keras_segattn.heads.base import Head, check_rank4
from keras_segattn.layers.channelized_axial_attention import join_scope, keras_conv_bn_mapping
from keras_segattn.layers.conv_bn_act import ConvBNAct


@keras.saving.register_keras_serializable(package="keras_segattn")
class CAAHead(Head):
    """CAA head: channelized axial attention + image-level context, then the classifier.

    ``y = cls(Drop(CBR_1x1(concat([CBR_1x1(CAA(CBR_3x3(x))), broadcast(CBR_1x1(mean_hw(x)))]))))``
    with ``CBR`` = conv (no bias) -> BN(``epsilon``, default 1e-3 like the Keras/iSeg
    reference) -> activation. Reference: CAR ``heads/caa.py`` ``ChannelizedAxialAttentionHead``
    (see the module docstring).

    Input: the last backbone feature ``(B, H, W, C)``; output float32 logits
    ``(B, H, W, num_classes)`` (no upsampling).

    Reference weights (``convert.load_reference_weights``): the keys are the Keras variable
    names of CAR's head relative to its name scope (``reference_weight_mapping(prefix=...)``
    adds the scope, e.g. ``"seg_managed/channelized_axial_attention_head"``), all layout
    ``"copy"``::

        attention_entry_conv/attention_entry_conv_{conv/kernel, bn/<bn>}:0   -> entry
        caa_block/...  (ChannelizedAxialAttention.reference_weight_mapping)  -> attention
        attention_end_conv/attention_end_conv_{conv/kernel, bn/<bn>}:0       -> end
        ImageLevelBlock/conv/conv_{conv/kernel, bn/<bn>}:0                   -> image_level
        end_conv/end_conv_{conv/kernel, bn/<bn>}:0                           -> fuse
        logits_conv/{kernel, bias}:0                                         -> conv_seg

    with ``<bn>`` in ``gamma, beta, moving_mean, moving_variance``. Read from the source:
    the sublayer names (``attention_entry_conv``, ``caa_block``, ``attention_end_conv``,
    ``end_conv``, ``ImageLevelBlock``'s default name and its ``conv``) and iSeg's
    ``ConvBnRelu`` naming (``<n>_conv``, ``<n>_bn``). Derived, not read: the
    ``scope/layer/variable:0`` nesting (Keras 2's name-scope rule, the format of golden case
    ``caa_axial``; checked with tf_keras 2.21 on a layer-for-layer mirror of the head's
    naming) and the classifier's name: it is not part of CAR's head but ``SegManaged``'s
    ``Conv2D(name=f"{model.name}/logits_conv")``, i.e. ``<model>/<model>/logits_conv/...``
    next to ``<model>/<head>/...`` (``seg_managed`` and
    ``channelized_axial_attention_head`` by default). For a whole CAR model's variables,
    strip both scopes first, e.g. ``{k.replace("seg_managed/seg_managed/", "").replace(
    "seg_managed/channelized_axial_attention_head/", ""): v}``, and drop the backbone's.
    ``classifier=None`` leaves our classifier out of the mapping. CAR's optional
    ``aux_conv`` and CAR ``g`` (class-aware regularization) layers have no counterpart
    here. The original CAA repo names the same layers ``entry``, ``ca_block``, ``end``
    and (in the model) ``seg_head_conv``; rename those keys to load its checkpoints.

    Args:
        num_classes: int.
        filters: int, width F of the attention branch and the image-level branch. Default 512.
        channels: int, width of the fusion conv (``end_conv``) before the classifier.
            Default 256.
        dropout: float, Dropout2d rate before the classifier. Default 0.1.
        activation: ``"relu"`` (reference) or ``"leaky_relu"`` (slope 0.01).
        attention_options: dict of extra ``ChannelizedAxialAttention`` arguments, or
            ``None``: query/key 64 channels, gate MLP 5 x ``0.25 F``, ``query_group_size``
            16, and the head's BN ``epsilon``/``momentum``.
        in_levels, output_names, loss_weights: see ``Head``.
        epsilon: float, BN epsilon of every BN in the head (the attention block's included,
            unless ``attention_options`` sets it). Default 1e-3 (iSeg/Keras).
        momentum: float, BN momentum (Keras meaning). Default 0.9 (iSeg's
            ``normalization()`` default); CAR's training configs use 0.9997.

    Example:
    >>> tuple(CAAHead(19, filters=16, channels=8)(keras.ops.ones((1, 6, 5, 32))).shape)
    (1, 6, 5, 19)
    """

    def __init__(self, num_classes, filters=512, channels=256, dropout=0.1, activation="relu",
                 attention_options=None, epsilon=1e-3, momentum=0.9, **kwargs):
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
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        block = dict(activation=activation, epsilon=self.epsilon, momentum=self.momentum,
                     dtype=self.dtype_policy)
        self.entry = ConvBNAct(self.filters, kernel_size=3, name="entry", **block)
        self.attention = sa_layers.ChannelizedAxialAttention(
            **self._attention_kwargs(), dtype=self.dtype_policy, name="attention"
        )
        self.end = ConvBNAct(self.filters, kernel_size=1, name="end", **block)
        self.image_level = ConvBNAct(self.filters, kernel_size=1, name="image_level", **block)
        self.fuse = ConvBNAct(self.channels, kernel_size=1, name="fuse", **block)
        self._make_classifier("conv_seg")

    def _attention_kwargs(self):
        kwargs = dict(filters=self.filters, epsilon=self.epsilon, momentum=self.momentum)
        kwargs.update(self.attention_options)
        return kwargs

    def build_head(self, input_shape):
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

    def decode(self, inputs, training=None):
        x = self.entry(inputs, training=training)
        x = ops.cast(self.attention(x, training=training), x.dtype)
        x = self.end(x, training=training)
        # Image-level context on the head input: (B, H, W, C) -> (B, 1, 1, F) -> (B, H, W, F).
        pooled = ops.mean(inputs, axis=(1, 2), keepdims=True)
        pooled = self.image_level(pooled, training=training)
        pooled = ops.zeros_like(x[..., :1]) + pooled
        x = self.fuse(ops.concatenate([x, pooled], axis=-1), training=training)
        return self._classify(x, training)

    def reference_weight_mapping(self, prefix="", classifier="logits_conv"):
        """CAR head's Keras variable names -> our variables (see the class docstring).

        Args:
            prefix: the head's Keras name scope, prepended to every head key with ``/``
                (``""``: keys relative to the head, e.g. ``caa_block/...``).
            classifier: the name scope of the 1x1 logits conv (outside the reference head,
                so not prefixed), or ``None`` to leave ``conv_seg`` unmapped.
        """
        mapping = {}
        mapping.update(keras_conv_bn_mapping(self.entry, join_scope(prefix, "attention_entry_conv")))
        mapping.update(self.attention.reference_weight_mapping(join_scope(prefix, "caa_block")))
        mapping.update(keras_conv_bn_mapping(self.end, join_scope(prefix, "attention_end_conv")))
        mapping.update(
            keras_conv_bn_mapping(self.image_level, join_scope(prefix, "ImageLevelBlock", "conv"))
        )
        mapping.update(keras_conv_bn_mapping(self.fuse, join_scope(prefix, "end_conv")))
        if classifier:
            mapping[join_scope(classifier, "kernel:0")] = (self.conv_seg.kernel, "copy")
            mapping[join_scope(classifier, "bias:0")] = (self.conv_seg.bias, "copy")
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "channels": self.channels,
                       "attention_options": dict(self.attention_options) or None,
                       "epsilon": self.epsilon, "momentum": self.momentum})
        return config

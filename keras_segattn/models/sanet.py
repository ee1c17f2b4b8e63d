"""SANet: Squeeze-and-Attention Networks.

Zilong Zhong, Zhong Qiu Lin, Rene Bidart, Xiaodan Hu, Ibrahim Ben Daya, Zhifeng Li, Wei-Shi
Zheng, Jonathan Li, Alexander Wong, "Squeeze-and-Attention Networks for Semantic
Segmentation", CVPR 2020, arXiv:1909.03402.

**No official code is known** (mechanisms.md section 6). The block is
``keras_segattn.layers.SqueezeAttention``
(``X_out = X_attn * X_res + X_attn``, ``X_attn = Up(sigmoid(F_attn(AvgPool(X_in))))``); the
model below follows the paper's description as far as it is known:

* four SA heads on the four hierarchical backbone stages (``P2``..``P5``), their outputs
  resized to the finest (stage-1, stride 4) resolution, concatenated and fused for the final
  mask prediction (abstract [3rd]);
* an image-level **categorical** loss: a multi-label classifier (``"image_logits"``,
  ``(B, num_classes)``) trained with binary cross-entropy against the multi-hot set of classes
  present in the mask (label 255 ignored), see ``SANetCategoricalLoss``;
* a **dense** auxiliary loss: mmseg's auxiliary FCN head on stage 3 (``"aux"``).

UNVERIFIED (recalled, not checked against the PDF; all configurable):
* the total loss ``L = L_mask + alpha * L_cat + beta * L_den`` with ``alpha = 0.2`` and
  ``beta = 0.8``;
* the widths of the SA heads (256 each here), the 1x1 fusion conv (256), the source of the
  categorical branch (global average of the last SA head's output -> Dense), and the
  ``align_corners=True`` resize (PyTorch-Encoding/EncNet convention, which SANet's training
  setup is recalled to follow).
"""

import keras
from keras import ops

from keras_segattn import layers as sa_layers
from keras_segattn.heads.fcn_head import (
    ClassifierHead, check_activation, check_num_classes, check_rank4,
)
from keras_segattn.layers.conv_bn_act import ConvBNAct
from keras_segattn.layers.resize import Resize
from keras_segattn.models.base import (
    IGNORE_CLASS, MAIN_OUTPUT, SegmentationModel, add_aux_fcn_head, build_trunk,
    register_model, resolve_backbone, upsample_logits,
)

IMAGE_OUTPUT = "image_logits"
_LEVELS = ("P2", "P3", "P4", "P5")


def class_presence(masks, num_classes, ignore_class=IGNORE_CLASS):
    """Multi-hot presence of each class in each mask: ``(B, H, W[, 1]) -> (B, num_classes)``.

    ``ignore_class`` and any other label outside ``[0, num_classes)`` count for nothing.
    Returns float32 zeros/ones.

    Example:
    >>> class_presence(np.array([[[0, 2], [255, 2]]]), 4)  # doctest: +SKIP
    [[1., 0., 1., 0.]]
    """
    del ignore_class  # every out-of-range label, 255 included, is dropped below
    labels = ops.cast(masks, "int32")
    labels = ops.reshape(labels, (ops.shape(labels)[0], -1))  # (B, H*W)
    valid = ops.logical_and(labels >= 0, labels < num_classes)
    labels = ops.where(valid, labels, num_classes)  # out-of-range -> an extra, dropped bin
    # Count (image, label) pairs with a scatter-add (jit-safe, O(B * K) memory; bincount needs
    # a concrete input under JAX jit): (B*N, 2) indices -> (B, num_classes + 1) counts.
    batch, positions = ops.shape(labels)[0], ops.shape(labels)[1]
    rows = ops.zeros_like(labels) + ops.expand_dims(ops.arange(batch, dtype="int32"), 1)
    indices = ops.stack([ops.reshape(rows, (-1,)), ops.reshape(labels, (-1,))], axis=-1)
    counts = ops.scatter(indices, ops.ones((batch * positions,), "float32"),
                         (batch, num_classes + 1))
    return ops.cast(counts[:, :num_classes] > 0, "float32")


@keras.saving.register_keras_serializable(package="keras_segattn")
class SANetCategoricalLoss(keras.losses.Loss):
    """SANet's image-level categorical loss: BCE(sigmoid(image_logits), presence(mask)).

    ``y_true`` is the segmentation mask ``(B, H, W)`` or ``(B, H, W, 1)`` (the same label the
    pixel outputs get); ``y_pred`` the ``(B, num_classes)`` image-level logits. The target is
    the multi-hot vector of classes present in the mask (``ignore_class`` and other
    out-of-range labels excluded); the loss is the mean over classes of the binary
    cross-entropy from logits, one value per image.

    Args:
        num_classes: int.
        ignore_class: int, label that never counts as present. Default 255.

    Example:
    >>> loss = SANetCategoricalLoss(num_classes=4)
    >>> float(loss(np.array([[[0, 255]]]), np.zeros((1, 4), "float32")))  # doctest: +SKIP
    0.6931...
    """

    def __init__(self, num_classes, ignore_class=IGNORE_CLASS, name="sanet_categorical",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        check_num_classes("SANetCategoricalLoss", num_classes)
        self.num_classes = int(num_classes)
        self.ignore_class = int(ignore_class)

    def call(self, y_true, y_pred):
        if len(y_pred.shape) != 2:
            raise ValueError(
                "SANetCategoricalLoss: y_pred must be (batch, num_classes) image-level logits, "
                f"got shape {y_pred.shape}."
            )
        target = ops.cast(class_presence(y_true, self.num_classes, self.ignore_class),
                          y_pred.dtype)
        losses = keras.losses.binary_crossentropy(target, y_pred, from_logits=True)
        return losses  # (B,)

    def get_config(self):
        return {"num_classes": self.num_classes, "ignore_class": self.ignore_class,
                "name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="keras_segattn")
class SANetHead(ClassifierHead):
    """SANet head: one ``SqueezeAttention`` per backbone stage, merged for the prediction.

    ``s_i = SA_i(P_i)`` for the four stages, ``s_i`` resized (bilinear) to the size of the first
    (finest) feature, ``y = cls(Drop(CBR_1x1(concat(s_1..s_4))))``; and the image-level
    logits ``Dense(mean_hw(s_4))``.

    Call on a list of the four stage features ``[P2, P3, P4, P5]`` (finest first). Returns
    ``(logits, image_logits)``: float32 ``(B, H2, W2, num_classes)`` at the first feature's
    size and float32 ``(B, num_classes)``.

    Args:
        num_classes: int.
        stage_channels: int, output width of each SA head. Default 256 (UNVERIFIED).
        channels: int, width of the 1x1 fusion conv. Default 256 (UNVERIFIED).
        dropout: float, Dropout2d rate. Default 0.1.
        activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.01) for the fusion conv.
        align_corners: bool, resize of the stage outputs. Default False.

    Example:
    >>> feats = [keras.ops.ones((1, s, s, c)) for s, c in ((8, 8), (4, 16), (4, 16), (4, 32))]
    >>> [t.shape for t in SANetHead(5, stage_channels=8, channels=8)(feats)]  # doctest: +SKIP
    [(1, 8, 8, 5), (1, 5)]
    """

    def __init__(self, num_classes, stage_channels=256, channels=256, dropout=0.1,
                 activation="relu", align_corners=False, **kwargs):
        super().__init__(num_classes, dropout=dropout, activation=activation, **kwargs)
        self.stage_channels = int(stage_channels)
        self.channels = int(channels)
        self.align_corners = bool(align_corners)
        self.squeeze_attention = [
            sa_layers.SqueezeAttention(self.stage_channels, dtype=self.dtype_policy,
                                       name=f"sa_{i}")
            for i in range(len(_LEVELS))
        ]
        self.resize = Resize(align_corners=self.align_corners, dtype=self.dtype_policy,
                             name="resize")
        self.fuse = ConvBNAct(self.channels, kernel_size=1, activation=activation,
                              dtype=self.dtype_policy, name="fuse")
        self._make_classifier("conv_seg")
        self.image_classifier = keras.layers.Dense(self.num_classes, dtype="float32",
                                                   name="image_classifier")

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != len(_LEVELS):
            raise ValueError(
                f"SANetHead: expected a list of {len(_LEVELS)} stage features, got {input_shape}."
            )
        for block, shape in zip(self.squeeze_attention, input_shape):
            check_rank4("SANetHead", shape)
            block.build((shape[0], None, None, shape[-1]))
        batch = input_shape[0][0]
        self.fuse.build((batch, None, None, len(_LEVELS) * self.stage_channels))
        self.conv_seg.build((batch, None, None, self.channels))
        self.image_classifier.build((batch, self.stage_channels))
        self.built = True

    def call(self, inputs, training=None):
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

    def compute_output_shape(self, input_shape):
        first = input_shape[0]
        return (tuple(first[:3]) + (self.num_classes,), (first[0], self.num_classes))

    def get_config(self):
        config = super().get_config()
        config.update({"stage_channels": self.stage_channels, "channels": self.channels,
                       "align_corners": self.align_corners})
        return config


@register_model
@keras.saving.register_keras_serializable(package="keras_segattn")
class SANet(SegmentationModel):
    """SANet (Zhong et al., CVPR 2020): four-stage Squeeze-and-Attention head + losses.

    Outputs:

    * ``"logits"``: merged SA heads, float32 ``(B, H, W, num_classes)``; loss weight 1.0.
    * ``"aux"``: auxiliary FCN head on stage 3 (the "dense" loss); loss weight
      ``dense_loss_weight`` (beta, default 0.8, UNVERIFIED). Only when ``aux_head``.
    * ``"image_logits"``: float32 ``(B, num_classes)`` multi-label logits (the "categorical"
      loss, ``SANetCategoricalLoss``: BCE against the classes present in the mask, 255
      ignored); loss weight ``categorical_loss_weight`` (alpha, default 0.2, UNVERIFIED).
      Only when ``categorical_loss``.

    ``compile()`` with ``loss="auto"`` puts ``SANetCategoricalLoss`` on ``"image_logits"`` and
    the usual ``SparseCategoricalCrossentropy(ignore_class=255)`` on the pixel outputs; the
    single label mask ``y`` given to ``fit`` goes to every output. A per-pixel
    ``sample_weight`` cannot be applied to ``"image_logits"``: pass a dict
    ``sample_weight`` keyed by output in that case. ``predict()`` returns only ``"logits"``.

    Args:
        num_classes: int.
        backbone: backbone name or model. Default ``"resnet50"``.
        output_stride: 8 (default), 16 or 32.
        aux_head: bool, the dense auxiliary head. Default True.
        input_shape: ``(H, W, 3)``; ``None`` sizes allowed.
        backbone_weights: backbone weights (``None``: random init).
        align_corners: bool, resizes in the head and to the input. Default True.
        stage_channels: int, width of each SA head. Default 256.
        channels: int, fusion width. Default 256.
        dropout: float. Default 0.1.
        activation: ``"relu"`` or ``"leaky_relu"``.
        categorical_loss: bool, add ``"image_logits"``. Default True.
        categorical_loss_weight: float, alpha. Default 0.2.
        dense_loss_weight: float, beta. Default 0.8.

    Example:
    >>> model = SANet(num_classes=21, backbone="resnet_tiny")  # doctest: +SKIP
    >>> model.compile()  # doctest: +SKIP
    >>> model.fit(images, masks)  # doctest: +SKIP
    """

    def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                 input_shape=(None, None, 3), backbone_weights=None, align_corners=True,
                 stage_channels=256, channels=256, dropout=0.1, activation="relu",
                 categorical_loss=True, categorical_loss_weight=0.2, dense_loss_weight=0.8,
                 **kwargs):
        check_num_classes("SANet", num_classes)
        check_activation("SANet", activation)
        head = SANetHead(num_classes, stage_channels=stage_channels, channels=channels,
                         dropout=dropout, activation=activation, align_corners=align_corners,
                         name="head")
        backbone_model = resolve_backbone(backbone, output_stride=output_stride,
                                          input_shape=input_shape, weights=backbone_weights)
        missing = [level for level in _LEVELS if level not in backbone_model.pyramid_level_inputs]
        if missing:
            raise ValueError(
                f"SANet: the backbone must expose the four stages {list(_LEVELS)} in "
                f"pyramid_level_inputs; {missing} are missing."
            )
        inputs, features = build_trunk(backbone_model, input_shape, levels=_LEVELS)
        main, image_logits = head([features[level] for level in _LEVELS])
        logits = {MAIN_OUTPUT: main}
        loss_weights = {MAIN_OUTPUT: 1.0}
        if aux_head:
            add_aux_fcn_head(logits, loss_weights, features["P4"], num_classes, dropout=dropout,
                             activation=activation, loss_weight=dense_loss_weight)
        outputs = upsample_logits(logits, inputs, align_corners)
        if categorical_loss:
            outputs[IMAGE_OUTPUT] = keras.layers.Identity(dtype="float32", name=IMAGE_OUTPUT)(
                image_logits)
            loss_weights[IMAGE_OUTPUT] = float(categorical_loss_weight)
        super().__init__(
            inputs=inputs,
            outputs=outputs,
            backbone=backbone_model,
            num_classes=num_classes,
            loss_weights=loss_weights,
            init_config=dict(
                num_classes=num_classes, output_stride=output_stride, aux_head=aux_head,
                input_shape=tuple(input_shape), backbone_weights=backbone_weights,
                align_corners=align_corners, stage_channels=stage_channels, channels=channels,
                dropout=dropout, activation=activation, categorical_loss=categorical_loss,
                categorical_loss_weight=categorical_loss_weight,
                dense_loss_weight=dense_loss_weight,
            ),
            **kwargs,
        )

    def compile(self, optimizer="auto", loss="auto", loss_weights="auto", metrics="auto",
                **kwargs):
        """``SegmentationModel.compile``; with ``loss="auto"`` the ``"image_logits"`` output
        gets ``SANetCategoricalLoss`` and the pixel outputs
        ``SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)``."""
        if loss == "auto" and IMAGE_OUTPUT in self.segmentation_output_names:
            loss = {
                name: (
                    SANetCategoricalLoss(self.num_classes, name=f"{name}_bce")
                    if name == IMAGE_OUTPUT
                    else keras.losses.SparseCategoricalCrossentropy(
                        from_logits=True, ignore_class=IGNORE_CLASS, name=f"{name}_ce")
                )
                for name in self.segmentation_output_names
            }
        super().compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights,
                        metrics=metrics, **kwargs)

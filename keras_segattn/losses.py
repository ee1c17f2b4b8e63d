"""Losses that are not plain per-pixel cross-entropy.

* ``SANetCategoricalLoss``: SANet's image-level categorical loss (Zhong et al., CVPR 2020,
  arXiv:1909.03402): binary cross-entropy of the image-level logits against the multi-hot set
  of classes present in the mask. The recipe (``keras_segattn.recipe.losses``) puts it on
  every image-level ``(B, num_classes)`` output.
* ``class_presence``: that multi-hot target.
"""

import keras
from keras import ops

from keras_segattn.common import IGNORE_INDEX, check_num_classes


def class_presence(masks, num_classes, ignore_class=IGNORE_INDEX):
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
    # Count (image, label) pairs with one segment sum over image * (num_classes + 1) + label
    # (jit-safe, O(B * K) memory; bincount needs a concrete input under JAX jit, and
    # ``ops.scatter`` is a Python loop over every pixel on Keras' torch backend).
    batch, positions = ops.shape(labels)[0], ops.shape(labels)[1]
    rows = ops.expand_dims(ops.arange(batch, dtype="int32"), 1)
    segments = ops.reshape(rows * (num_classes + 1) + labels, (-1,))
    counts = ops.segment_sum(ops.ones((batch * positions,), "float32"), segments,
                             num_segments=batch * (num_classes + 1))
    counts = ops.reshape(counts, (batch, num_classes + 1))
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

    def __init__(self, num_classes, ignore_class=IGNORE_INDEX, name="sanet_categorical",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.num_classes = check_num_classes("SANetCategoricalLoss", num_classes)
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

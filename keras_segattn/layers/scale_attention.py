"""Attention to scale: per-pixel soft weighting of multi-scale score maps.

Chen, Yang, Wang, Xu, Yuille, "Attention to Scale: Scale-aware Semantic Image
Segmentation", CVPR 2016, arXiv 1511.03339. The original DeepLab Caffe prototxts were not
located (see ``../shared/docs/mechanisms.md`` section 9).
"""

import keras
from keras import ops

from keras_segattn.layers._checks import positive_int


def merge_scales(scores, logits):
    """``g = sum_s softmax_s(logits)[..., s] * scores[s]`` in float32.

    Args:
        scores: list of ``S`` tensors ``(B, H, W, K)`` at a common resolution.
        logits: ``(B, H, W, S)`` attention logits ``h^s``.

    Returns:
        ``(merged (B, H, W, K) float32, weights (B, H, W, S) float32)``.
    """
    weights = ops.softmax(ops.cast(logits, "float32"), axis=-1)
    merged = None
    for s, score in enumerate(scores):
        term = ops.cast(score, "float32") * weights[..., s:s + 1]
        merged = term if merged is None else merged + term
    return merged, weights


@keras.saving.register_keras_serializable(package="keras_segattn")
class ScaleAttention(keras.layers.Layer):
    """Attention-to-scale merge of ``S`` per-scale score maps with a learned attention net.

    Chen et al., "Attention to Scale: Scale-aware Semantic Image Segmentation", CVPR 2016,
    arXiv 1511.03339. No public reference code (the DeepLab Caffe prototxts are lost);
    the layer follows the paper's formulation::

        h = Conv1x1_S(Dropout(ReLU(Conv3x3_hidden(concat_s features^s))))   (B, H, W, S)
        w^s = exp(h^s) / sum_t exp(h^t)                                     per pixel
        g = sum_s w^s * f^s                                                 (B, H, W, K)

    where ``f^s`` are the per-scale score maps and ``features^s`` the per-scale features
    (fc7 in the paper), all already resized to a common resolution. The softmax and the
    weighted sum run in float32; ``g`` is cast to the compute dtype.

    Call: ``layer(scores, features, return_attention_scores=False)`` with ``scores`` and
    ``features`` lists of ``S`` tensors (``features`` may also be one pre-concatenated
    tensor). Returns ``g`` ``(B, H, W, K)``, or ``(g, w)`` with the float32 weights
    ``w`` ``(B, H, W, S)`` for visualisation. Use :func:`merge_scales` when the attention
    logits come from elsewhere.

    Deviations: the paper's extra supervision (one loss per scale) belongs to the model's
    losses, not to this layer. Default ``dropout=0.0`` (the paper's rate is unverified).

    Args:
        hidden_filters: int, channels of the 3x3 conv. Default 512 (paper).
        kernel_size: int, kernel of the first conv. Default 3.
        dropout: float, dropout rate after the ReLU. Default 0.0.

    Example:
    >>> layer = ScaleAttention(hidden_filters=4)
    >>> scores = [keras.ops.ones((2, 5, 7, 3)), keras.ops.zeros((2, 5, 7, 3))]
    >>> features = [keras.ops.ones((2, 5, 7, 2)), keras.ops.ones((2, 5, 7, 2))]
    >>> merged, weights = layer(scores, features, return_attention_scores=True)
    >>> tuple(merged.shape), tuple(weights.shape)
    ((2, 5, 7, 3), (2, 5, 7, 2))
    """

    # What keras_segattn.visualize draws for this layer.
    attention_kind = "scale"

    def __init__(self, hidden_filters=512, kernel_size=3, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        positive_int(self, "hidden_filters", hidden_filters)
        positive_int(self, "kernel_size", kernel_size)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"ScaleAttention: dropout must be in [0, 1), got {dropout!r}.")
        self.hidden_filters = hidden_filters
        self.kernel_size = kernel_size
        self.dropout = float(dropout)
        self.hidden_conv = keras.layers.Conv2D(
            hidden_filters, kernel_size, padding="same", activation="relu",
            dtype=self.dtype_policy, name="hidden_conv",
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="dropout")
        self.logits_conv = None
        self.num_scales = None

    def build(self, scores_shape, features_shape):
        if not isinstance(scores_shape, (list, tuple)) or not scores_shape or not all(
            isinstance(s, (list, tuple)) for s in scores_shape
        ):
            raise ValueError(
                "ScaleAttention: `scores` must be a list of S >= 1 tensors (B, H, W, K); "
                f"got shape(s) {scores_shape}."
            )
        for shape in scores_shape:
            if len(shape) != 4:
                raise ValueError(f"ScaleAttention: every score map must be 4-D (B, H, W, K), got {shape}.")
        classes = {shape[-1] for shape in scores_shape}
        if len(classes) != 1 or None in classes:
            raise ValueError(
                f"ScaleAttention: all score maps need the same known channel count K, got {sorted(map(str, classes))}."
            )
        num_scales = len(scores_shape)
        if isinstance(features_shape, (list, tuple)) and features_shape and isinstance(features_shape[0], (list, tuple)):
            if len(features_shape) != num_scales:
                raise ValueError(
                    f"ScaleAttention: got {num_scales} score maps but {len(features_shape)} feature maps; "
                    "pass one feature map per scale."
                )
            shapes = list(features_shape)
        else:
            shapes = [features_shape]
        for shape in shapes:
            if len(shape) != 4 or shape[-1] is None:
                raise ValueError(
                    f"ScaleAttention: feature maps must be 4-D (B, H, W, C) with known C, got {shape}."
                )
        channels = sum(int(shape[-1]) for shape in shapes)
        self.num_scales = num_scales
        self.hidden_conv.build((None, None, None, channels))
        self.logits_conv = keras.layers.Conv2D(num_scales, 1, dtype=self.dtype_policy, name="logits_conv")
        self.logits_conv.build((None, None, None, self.hidden_filters))
        self.built = True

    def call(self, scores, features, training=None, return_attention_scores=False):
        if isinstance(features, (list, tuple)):
            features = ops.concatenate(list(features), axis=-1) if len(features) > 1 else features[0]
        hidden = self.dropout_layer(self.hidden_conv(features), training=training)
        merged, weights = merge_scales(list(scores), self.logits_conv(hidden))
        merged = ops.cast(merged, self.compute_dtype)
        if return_attention_scores:
            return merged, weights
        return merged

    def get_config(self):
        config = super().get_config()
        config.update(
            {"hidden_filters": self.hidden_filters, "kernel_size": self.kernel_size, "dropout": self.dropout}
        )
        return config

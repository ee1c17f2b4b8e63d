"""The decode-head contract: ``Head``, the base of every head in ``keras_segattn.heads``.

A head is a ``keras.layers.Layer`` that

* declares the backbone levels it reads: ``in_levels`` (``("P5",)`` for most heads: ResNet
  stage 4; ``("P4",)`` for mmseg's auxiliary head on stage 3; ``("P2", "P3", "P4", "P5")``
  for SANet);
* called on the **feature dict** ``{"P2": ..., "P5": ...}`` returns a dict of named float32
  logits at feature resolution, ``{name: (B, h, w, num_classes)}`` (image-level outputs are
  ``(B, num_classes)``), with the names ``output_names`` (``("logits",)``; DANet
  ``("logits", "pam", "cam")``; an auxiliary head ``("aux",)``);
* exposes ``loss_weights`` (``{output name: weight}``) for the segmenter's loss;
* maps its official state-dict layout, where there is one, in
  ``reference_weight_mapping(source=None)`` (``source="mmseg"``: mmsegmentation's keys, used
  by ``Segmenter.reference_weight_mapping`` under ``decode_head.`` / ``auxiliary_head.``).

Called on a tensor (or, for a multi-level head, a list of tensors finest first) instead of
a dict, a head returns its raw output: one logits tensor, or a tuple in ``output_names``
order. That is the form the unit and golden tests use.

Writing a head: subclass ``Head``; in ``__init__`` store the arguments and create the blocks,
then ``self._make_classifier(name)`` (``Dropout2d -> 1x1 conv``, float32); implement
``build_head(input_shape)`` (the shape of the level(s) read) and ``decode(inputs, training)``
(the maths, on a tensor or list of tensors; not ``forward``, which is ``torch.nn.Module``'s
on the PyTorch backend); extend ``get_config``. ``output_spec`` gives
the symbolic outputs without tracing ``decode`` (some attention blocks need static sizes):
float32 logits at the input size, one per output name; override it for other shapes.
``Head`` does the dict/tensor dispatch, the argument checks (``num_classes``, ``activation``), ``in_levels``,
``output_names``, ``loss_weights`` and their serialization.
"""

import numbers

import keras

from keras_segattn.common import MAIN_OUTPUT, check_activation, check_num_classes
from keras_segattn.layers._checks import rank4_channels
from keras_segattn.layers._common import pointwise_conv

LEVELS = ("P2", "P3", "P4", "P5")


def make_classifier(num_classes, dropout, name, dtype="float32"):
    """``(SpatialDropout2D or None, Conv2D 1x1 with bias)``; the conv runs in float32 so logits
    stay float32 under mixed precision."""
    drop = keras.layers.SpatialDropout2D(dropout, name=f"{name}_dropout") if dropout else None
    conv = keras.layers.Conv2D(num_classes, 1, use_bias=True, dtype=dtype, name=name)
    return drop, conv


def apply_classifier(drop, conv, x, training=None):
    """``conv(Dropout2d(x))`` (no dropout when ``drop`` is ``None``).

    A built ``conv`` runs as ``layers.pointwise_conv`` (a matmul over the channels: the same
    variables and result without Keras' channels-first copies on torch)."""
    if drop is not None:
        x = drop(x, training=training)
    return pointwise_conv(conv, x) if conv.built else conv(x)


def check_rank4(owner, input_shape):
    """A ``(B, H, W, C)`` input shape with known channels (``layers._checks.rank4_channels``)."""
    return rank4_channels(owner, tuple(input_shape))


def _names(owner, value, what):
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names) \
            or len(set(names)) != len(names):
        raise ValueError(f"{owner}: {what} must be distinct non-empty names, got {value!r}.")
    return names


class Head(keras.layers.Layer):
    """Base of the decode heads (see the module docstring for the contract).

    Args:
        num_classes: int >= 1.
        dropout: float, Dropout2d rate before the classifier.
        activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.01) for the head's blocks.
        in_levels: backbone levels read, e.g. ``("P4",)``; ``None``: the class's
            ``default_in_levels``.
        output_names: names of the outputs in the returned dict (a string for a one-output
            head); ``None``: the class's ``default_output_names``.
        loss_weights: a number (every output) or ``{output name: weight}``; ``None``: 1.0
            for every output.
    """

    default_in_levels = ("P5",)
    default_output_names = (MAIN_OUTPUT,)

    def __init__(self, num_classes, dropout=0.1, activation="relu", in_levels=None,
                 output_names=None, loss_weights=None, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.num_classes = check_num_classes(owner, num_classes)
        self.dropout = float(dropout)
        self.activation = check_activation(owner, activation)
        levels = _names(owner, self.default_in_levels if in_levels is None else in_levels,
                        "in_levels")
        unknown = [level for level in levels if level not in LEVELS]
        if unknown:
            raise ValueError(f"{owner}: in_levels must be among {list(LEVELS)}, got {unknown}.")
        if len(levels) != len(self.default_in_levels):
            raise ValueError(
                f"{owner}: reads {len(self.default_in_levels)} level(s), got in_levels={levels}."
            )
        self.in_levels = levels
        names = self.default_output_names if output_names is None else output_names
        self.output_names = _names(owner, names, "output_names")
        if len(self.output_names) != len(self.default_output_names):
            raise ValueError(
                f"{owner}: has {len(self.default_output_names)} output(s) "
                f"{list(self.default_output_names)}, got output_names={self.output_names}."
            )
        self.loss_weights = self._loss_weights(owner, loss_weights)

    def _loss_weights(self, owner, loss_weights):
        if loss_weights is None:
            loss_weights = 1.0
        if isinstance(loss_weights, numbers.Real) and not isinstance(loss_weights, bool):
            return {name: float(loss_weights) for name in self.output_names}
        if not isinstance(loss_weights, dict) or set(loss_weights) != set(self.output_names):
            raise ValueError(
                f"{owner}: loss_weights must be a number or a dict with the keys "
                f"{list(self.output_names)}, got {loss_weights!r}."
            )
        return {name: float(loss_weights[name]) for name in self.output_names}

    # -- the classifier -------------------------------------------------------------------
    def _make_classifier(self, name="conv_seg"):
        """Create ``self.drop`` (SpatialDropout2D or None) and ``self.conv_seg`` (1x1, float32)."""
        self.drop, self.conv_seg = make_classifier(self.num_classes, self.dropout, name)

    def _classify(self, x, training=None):
        return apply_classifier(self.drop, self.conv_seg, x, training)

    # -- dict / tensor dispatch -----------------------------------------------------------
    def _select(self, features):
        missing = [level for level in self.in_levels if level not in features]
        if missing:
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: reads the levels {list(self.in_levels)} "
                f"but the features have only {sorted(features)}."
            )
        selected = [features[level] for level in self.in_levels]
        return selected[0] if len(selected) == 1 else selected

    def name_outputs(self, outputs):
        """``decode``'s output (one tensor, or a tuple in ``output_names`` order) ->
        ``{output name: tensor}``."""
        if len(self.output_names) == 1:
            return {self.output_names[0]: outputs}
        return dict(zip(self.output_names, outputs))

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = self._select(input_shape)
        self.build_head(input_shape)
        self.built = True

    def build_head(self, input_shape):
        raise NotImplementedError(f"{type(self).__name__} must implement build_head().")

    def call(self, inputs, training=None):
        if isinstance(inputs, dict):
            return self.name_outputs(self.decode(self._select(inputs), training=training))
        return self.decode(inputs, training=training)

    def decode(self, inputs, training=None):
        raise NotImplementedError(f"{type(self).__name__} must implement decode().")

    def compute_output_spec(self, inputs, training=None):
        if isinstance(inputs, dict):
            return self.name_outputs(self.output_spec(self._select(inputs)))
        return self.output_spec(inputs)

    def output_spec(self, inputs):
        """Symbolic outputs of ``decode``: float32 logits ``(B, H, W, num_classes)`` at the
        input's size, one per output name (a tuple when there are several)."""
        shape = tuple(inputs.shape[:3]) + (self.num_classes,)
        specs = tuple(keras.KerasTensor(shape, dtype="float32") for _ in self.output_names)
        return specs[0] if len(specs) == 1 else specs

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "dropout": self.dropout,
                       "activation": self.activation, "in_levels": list(self.in_levels),
                       "output_names": list(self.output_names),
                       "loss_weights": dict(self.loss_weights)})
        return config


def renamed(mapping, renames):
    """Replace the leading module path of every reference key (``renames``: ``(old, new)``).

    ``old`` matches whole path components: ``"sa.gamma"`` renames ``"sa.gamma"``,
    ``"conv5a.0"`` renames ``"conv5a.0.weight"``. A key that no pair matches is an error, so a
    head that grows a sublayer cannot be half-ported silently. Used by the heads whose
    mmsegmentation module names differ from the official repository's.
    """
    result = {}
    for key, value in mapping.items():
        for old, new in renames:
            if key == old or key.startswith(old + "."):
                result[new + key[len(old):]] = value
                break
        else:
            raise ValueError(f"internal error: no new name for reference key {key!r}")
    return result

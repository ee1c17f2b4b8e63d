"""``SegmentationModel``: the shared base of every model in ``keras_segattn.models``.

Contract (stable API, used by every model file)
================================================

A model is a **functional** ``keras.Model`` built inside the subclass ``__init__``
(KerasCV/KerasHub ``Task`` style)::

    images (B, H, W, 3) RGB in [0, 255], any numeric dtype
      -> ImageNormalization (ImageNet mean/std, mmseg values)     layer "normalize"
      -> backbone feature extractor {"P2".."P5"}                 layer "backbone"
      -> head(s)                                                  layers "head", "aux_head", ...
      -> Resize(align_corners) of every logits map to (H, W)     layers "logits", "aux", ...

Outputs are a **dict** of float32 logits ``(B, H, W, num_classes)`` at the input
resolution: ``"logits"`` (the prediction) plus auxiliary outputs (``"aux"``, DANet
``"pam"``/``"cam"``, ...). Feature names: ``"P4"`` is ResNet stage 3 (``layer3``, 1024
channels on ResNet-50), ``"P5"`` is stage 4 (``layer4``, 2048 channels); with output stride 8
both have stride 8.

Writing a model (the whole pattern)::

    @register_model
    @keras.saving.register_keras_serializable(package="keras_segattn")
    class MyNet(SegmentationModel):
        def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                     input_shape=(None, None, 3), backbone_weights=None,
                     align_corners=False, dropout=0.1, activation="relu", **kwargs):
            backbone_model = resolve_backbone(backbone, output_stride=output_stride,
                                              input_shape=input_shape, weights=backbone_weights)
            inputs, features = build_trunk(backbone_model, input_shape)
            logits = {"logits": MyHead(num_classes, name="head")(features["P5"])}
            loss_weights = {"logits": 1.0}
            if aux_head:  # logits["aux"] on stage 3, loss weight 0.4
                add_aux_fcn_head(logits, loss_weights, features["P4"], num_classes,
                                 dropout=dropout, activation=activation)
            self._init_from_logits(
                inputs, logits, backbone=backbone_model, num_classes=num_classes,
                loss_weights=loss_weights, align_corners=align_corners,
                init_config=dict(num_classes=num_classes, output_stride=output_stride,
                                 aux_head=aux_head, input_shape=input_shape,
                                 backbone_weights=backbone_weights,
                                 align_corners=align_corners, dropout=dropout,
                                 activation=activation),
                **kwargs,  # name=..., trainable=...
            )

``_init_from_logits`` resizes every logits map to the input (``upsample_logits``) and calls
``SegmentationModel.__init__``; a model with outputs that are not per-pixel logits (SANet's
image-level output) calls ``super().__init__(inputs=..., outputs=..., ...)`` itself.

``init_config`` holds every constructor argument except ``backbone`` (which ``get_config``
serializes with ``keras.saving.serialize_keras_object``); ``from_config`` deserializes the
backbone and calls ``cls(**config)``. ``register_model`` adds the class to
``keras_segattn.models.get`` / ``list_models`` under its lower-cased class name.

What the base class provides:

* ``compile()`` with no arguments: the mmsegmentation recipe (SGD momentum 0.9, poly LR power
  0.9, weight decay 5e-4, ``SparseCategoricalCrossentropy(from_logits=True,
  ignore_class=255)`` on every output weighted by ``default_loss_weights``, ``MeanIoU`` on
  ``"logits"``). Explicit arguments work as in Keras.
* ``fit``/``evaluate`` with a single label mask ``y`` of shape ``(B, H, W)`` or
  ``(B, H, W, 1)``: it is applied to every output (``compute_loss``/``compute_metrics``
  broadcast it); a dict ``y`` keyed like the outputs also works.
* ``predict()`` returns only the main logits ``(B, H, W, num_classes)`` float32;
  ``model(x)`` returns the full dict.
* ``inference_model()``: a single-output ``keras.Model`` (images -> main logits) that shares
  the weights, for ``export``/TFLite/ONNX.
"""

import re

import keras

from keras_segattn import validation
from keras_segattn.layers.normalization import ImageNormalization
from keras_segattn.layers.resize import Resize
from keras_segattn.optimizers import SGD

MAIN_OUTPUT = "logits"
IGNORE_CLASS = 255

_MODEL_REGISTRY = {}


# ----------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------
def register_model(cls):
    """Class decorator: make ``cls`` available as ``keras_segattn.models.get(name)``."""
    _MODEL_REGISTRY[cls.__name__.lower()] = cls
    return cls


def list_models():
    """Names (class names) of every registered model, sorted."""
    return sorted(cls.__name__ for cls in _MODEL_REGISTRY.values())


def get(name, **kwargs):
    """Build a model by name (case-insensitive): ``get("danet", num_classes=19)``.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"keras_segattn.models.get: name must be a string, got {type(name).__name__}.")
    key = name.lower().replace("-", "").replace("_", "")
    for registered, cls in _MODEL_REGISTRY.items():
        if registered.replace("_", "") == key:
            return cls(**kwargs)
    raise ValueError(
        f"keras_segattn.models.get: unknown model {name!r}. Valid names (case-insensitive): "
        + ", ".join(list_models())
    )


# ----------------------------------------------------------------------------------------
# Backbone and graph helpers for subclasses
# ----------------------------------------------------------------------------------------
def resolve_backbone(backbone, output_stride=8, input_shape=(None, None, 3), weights=None,
                     multi_grid=None):
    """Return a backbone ``keras.Model`` with ``pyramid_level_inputs``.

    ``backbone`` is a name (built with ``keras_segattn.backbones.get_backbone``), an already
    built backbone model (used as is), or a serialized backbone dict (from ``get_config``).
    """
    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)
    if isinstance(backbone, str):
        from keras_segattn.backbones import get_backbone

        backbone = get_backbone(
            backbone=backbone, output_stride=output_stride, multi_grid=multi_grid,
            weights=weights, input_shape=tuple(input_shape),
        )
    if not isinstance(backbone, keras.Model) or not hasattr(backbone, "pyramid_level_inputs"):
        raise ValueError(
            "backbone must be a backbone name (see keras_segattn.backbones) or a KerasCV-style "
            f"backbone model with `pyramid_level_inputs`; got {type(backbone).__name__}."
        )
    return backbone


def build_trunk(backbone, input_shape=(None, None, 3), levels=("P2", "P3", "P4", "P5")):
    """Images input, normalisation and backbone features.

    Returns ``(inputs, features)``: ``inputs`` is the ``keras.Input`` named ``"images"`` and
    ``features`` a dict ``{"P2": ..., "P5": ...}`` of backbone outputs (normalised images in,
    through one feature-extractor model named ``"backbone"`` that shares the backbone's
    layers).
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}.")
    inputs = keras.Input(shape=input_shape, name="images")
    levels = [level for level in levels if level in backbone.pyramid_level_inputs]
    extractor = keras.Model(
        backbone.inputs,
        {level: backbone.get_layer(backbone.pyramid_level_inputs[level]).output for level in levels},
        name="backbone",
    )
    x = ImageNormalization(name="normalize")(inputs)
    return inputs, extractor(x)


def upsample_logits(logits, inputs, align_corners=False):
    """Resize every logits map in the dict to the input's height and width, in float32.

    Each resize layer is named after its output key (``"logits"``, ``"aux"``, ...).
    """
    return {
        key: Resize(align_corners=align_corners, dtype="float32", name=key)(value, inputs)
        for key, value in logits.items()
    }


def aux_fcn_head(num_classes, channels=256, dropout=0.1, activation="relu", use_bias=False,
                 name="aux_head"):
    """mmsegmentation's auxiliary ``FCNHead`` on stage 3: one 3x3 ConvModule (``channels``),
    no concat, Dropout2d(``dropout``), 1x1 classifier (loss weight 0.4). ``use_bias=True``
    gives the 3x3 conv a bias (the "dsn" head of the official CCNet/ISANet code)."""
    from keras_segattn.heads import FCNHead

    return FCNHead(num_classes, channels=channels, num_convs=1, concat_input=False,
                   dropout=dropout, activation=activation, use_bias=use_bias, name=name)


def add_aux_fcn_head(logits, loss_weights, feature, num_classes, channels=256, dropout=0.1,
                     activation="relu", use_bias=False, loss_weight=0.4):
    """Add the standard auxiliary output to a model's ``logits``/``loss_weights`` dicts.

    Sets ``logits["aux"] = aux_fcn_head(...)(feature)`` (layer ``"aux_head"``; ``feature`` is
    stage 3, ``features["P4"]``, in every model of the package) and
    ``loss_weights["aux"] = loss_weight`` (0.4, mmseg's ``auxiliary_head`` weight). The
    other arguments are ``aux_fcn_head``'s.
    """
    head = aux_fcn_head(num_classes, channels=channels, dropout=dropout, activation=activation,
                        use_bias=use_bias)
    logits["aux"] = head(feature)
    loss_weights["aux"] = float(loss_weight)


# ----------------------------------------------------------------------------------------
# The base class
# ----------------------------------------------------------------------------------------
class SegmentationModel(keras.Model):
    """Base class: see the module docstring for the subclass contract.

    Args (for subclasses only):
        inputs, outputs: the functional graph (outputs: dict of upsampled float32 logits that
            includes ``"logits"``).
        backbone: the backbone model (serialized in ``get_config``).
        num_classes: int.
        loss_weights: dict ``{output_name: weight}`` used by ``compile()`` by default.
        init_config: dict of the subclass's constructor arguments except ``backbone``.
    """

    def __init__(self, inputs=None, outputs=None, *, backbone=None, num_classes=None,
                 loss_weights=None, init_config=None, **kwargs):
        if not isinstance(outputs, dict) or MAIN_OUTPUT not in outputs:
            raise ValueError(
                f"{type(self).__name__}: outputs must be a dict with a {MAIN_OUTPUT!r} entry."
            )
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self._segattn_output_names = tuple(sorted(outputs))
        weights = {name: 1.0 if name == MAIN_OUTPUT else 0.4 for name in outputs}
        weights.update(loss_weights or {})
        self._segattn_loss_weights = {name: float(weights[name]) for name in outputs}
        self._segattn_config = dict(init_config or {})

    def _init_from_logits(self, inputs, logits, *, backbone, num_classes, loss_weights,
                          align_corners, init_config, **kwargs):
        """Finish a subclass's construction from its logits at feature resolution.

        Resizes every map of the ``logits`` dict to the input size (``upsample_logits``:
        float32 layers named after the keys, ``align_corners``) and calls
        ``SegmentationModel.__init__`` with the result as ``outputs``; the other arguments
        are ``SegmentationModel.__init__``'s. Call it in place of ``super().__init__``.
        """
        SegmentationModel.__init__(
            self,
            inputs=inputs,
            outputs=upsample_logits(logits, inputs, align_corners),
            backbone=backbone,
            num_classes=num_classes,
            loss_weights=loss_weights,
            init_config=init_config,
            **kwargs,
        )

    # -- introspection -----------------------------------------------------------------
    @property
    def segmentation_output_names(self):
        """Output names, sorted (``"logits"`` is the prediction)."""
        return list(self._segattn_output_names)

    @property
    def default_loss_weights(self):
        """``{output_name: weight}`` used by ``compile()`` without ``loss_weights``."""
        return dict(self._segattn_loss_weights)

    # -- training recipe ----------------------------------------------------------------
    def compile(self, optimizer="auto", loss="auto", loss_weights="auto", metrics="auto", *,
                steps=80000, learning_rate=0.01, momentum=0.9, weight_decay=5e-4, power=0.9,
                end_learning_rate=1e-4, warmup_steps=0, head_lr_multiplier=1.0, **kwargs):
        """Compile; the defaults are mmsegmentation's standard recipe.

        Args:
            optimizer: ``"auto"``: ``keras_segattn.optimizers.SGD(momentum)`` with
                ``PolynomialDecay(learning_rate, decay_steps=steps, end_learning_rate,
                power)`` and ``weight_decay`` as PyTorch applies it (L2 added to the
                gradient before momentum, on every variable, like mmseg's default; Keras'
                own SGD decay is the decoupled kind, ~10x weaker at momentum 0.9).
                Anything else is passed to ``keras.Model.compile``.
            loss: ``"auto"``: ``SparseCategoricalCrossentropy(from_logits=True,
                ignore_class=255)`` on every output.
            loss_weights: ``"auto"``: ``default_loss_weights`` (main 1.0, aux 0.4, DANet
                pam/cam 1.0) when ``loss`` is ``"auto"`` or a dict, else ``None``.
            metrics: ``"auto"``: ``MeanIoU(num_classes, ignore_class=255,
                sparse_y_pred=False)`` on ``"logits"`` (logged as ``logits_mean_iou``).
            steps: total training iterations for the poly schedule (mmseg: 40k/80k/160k).
            learning_rate, momentum, weight_decay, power, end_learning_rate: the recipe's
                numbers (mmseg: 0.01, 0.9, 5e-4, 0.9, 1e-4).
            warmup_steps: linear warm-up length (0, mmseg's CNN recipes; with > 0 the
                schedule is ``keras_segattn.training.WarmupPolyDecay``, mmseg's LinearLR +
                PolyLR).
            head_lr_multiplier: learning-rate factor of every variable outside the
                backbone (the heads). 1.0 (mmseg); the official DANet recipe uses 10.
            **kwargs: other ``keras.Model.compile`` arguments.
        """
        recipe = None
        if optimizer == "auto" and loss == "auto" and loss_weights == "auto" and metrics == "auto" \
                and not kwargs:
            recipe = dict(steps=int(steps), learning_rate=float(learning_rate),
                          momentum=float(momentum), weight_decay=float(weight_decay or 0.0),
                          power=float(power), end_learning_rate=float(end_learning_rate),
                          warmup_steps=int(warmup_steps),
                          head_lr_multiplier=float(head_lr_multiplier))
        if optimizer == "auto":
            if warmup_steps:
                from keras_segattn.training.schedules import WarmupPolyDecay

                schedule = WarmupPolyDecay(learning_rate, decay_steps=int(steps),
                                           warmup_steps=int(warmup_steps),
                                           end_lr=end_learning_rate, power=power)
            else:
                schedule = keras.optimizers.schedules.PolynomialDecay(
                    initial_learning_rate=learning_rate,
                    decay_steps=int(steps),
                    end_learning_rate=end_learning_rate,
                    power=power,
                )
            optimizer = SGD(
                learning_rate=schedule, momentum=momentum, weight_decay=weight_decay or None,
                lr_multipliers=self.head_lr_multipliers(head_lr_multiplier),
            )
        if loss_weights == "auto":
            loss_weights = (
                self.default_loss_weights if (loss == "auto" or isinstance(loss, dict)) else None
            )
            if isinstance(loss, dict) and loss_weights is not None:
                loss_weights = {k: v for k, v in loss_weights.items() if k in loss}
        if loss == "auto":
            loss = {
                name: keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True, ignore_class=IGNORE_CLASS, name=f"{name}_ce"
                )
                for name in self._segattn_output_names
            }
        if metrics == "auto":
            metrics = {
                MAIN_OUTPUT: [
                    keras.metrics.MeanIoU(
                        num_classes=self.num_classes,
                        ignore_class=IGNORE_CLASS,
                        sparse_y_pred=False,
                        name="mean_iou",
                    )
                ]
            }
        super().compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights,
                        metrics=metrics, **kwargs)
        self._segattn_recipe = recipe

    def head_lr_multipliers(self, multiplier):
        """``lr_multipliers`` for ``keras_segattn.optimizers.SGD``: ``multiplier`` on every
        variable outside the backbone (``{}`` when it is 1)."""
        if float(multiplier) == 1.0:
            return {}
        return {re.escape(layer.name) + "/": float(multiplier) for layer in self.layers
                if layer is not self.backbone and layer.weights}

    def get_compile_config(self):
        recipe = getattr(self, "_segattn_recipe", None)
        if self.compiled and recipe is not None:
            return {"segattn_recipe": dict(recipe)}
        return super().get_compile_config()

    def compile_from_config(self, config):
        if isinstance(config, dict) and "segattn_recipe" in config:
            self.compile(**config["segattn_recipe"])
            if self.built:  # so that the saved optimizer state can be loaded
                self.optimizer.build(self.trainable_variables)
            return
        try:
            config = keras.saving.deserialize_keras_object(config)
            self.compile(**config)
        except Exception as error:  # noqa: BLE001 - loading must not fail on compile state
            import warnings

            warnings.warn(f"{type(self).__name__}: could not re-compile after loading ({error}); "
                          "call compile() yourself.")
            return
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _broadcast(self, value, y_pred):
        """A single label mask (or sample weight) -> one per output."""
        if value is None or not isinstance(y_pred, dict) or isinstance(value, dict):
            return value
        if len(value.shape) == 4 and value.shape[-1] == 1:
            value = keras.ops.squeeze(value, axis=-1)
        return {name: value for name in y_pred}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(
            x=x,
            y=self._broadcast(y, y_pred),
            y_pred=y_pred,
            sample_weight=self._broadcast(sample_weight, y_pred),
            training=training,
        )

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(
            x, self._broadcast(y, y_pred), y_pred, self._broadcast(sample_weight, y_pred)
        )

    # -- input checks at the entry points (keras_segattn.validation; issue 10) ---------
    # Labels outside [0, num_classes) other than 255, float labels and NaN/Inf images fail
    # with one-line ValueErrors: arrays are checked here, tf.data datasets per batch in
    # their own graph; the errors of those in-graph checks are re-raised in one line (and
    # on JAX the model stays usable after such a failure).
    def fit(self, x=None, y=None, batch_size=None, *args, **kwargs):
        x, y = validation.checked_data(x, y, self.num_classes, batch_size)
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = validation.checked_validation_data(
                kwargs["validation_data"], self.num_classes,
                kwargs.get("validation_batch_size") or batch_size)
        values = validation.entry_values(self)
        if values:
            release = keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda batch, logs=None: values.clear())
            kwargs["callbacks"] = [release, *(kwargs.get("callbacks") or [])]
        with validation.one_line_errors(self, values):
            return super().fit(x, y, batch_size, *args, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, *args, **kwargs):
        if x is not None:
            x, y = validation.checked_data(x, y, self.num_classes, batch_size)
        with validation.one_line_errors(self, validation.entry_values(self)):
            return super().evaluate(x, y, batch_size, *args, **kwargs)

    def predict(self, x, batch_size=None, *args, **kwargs):
        x = validation.checked_images(x, batch_size)
        with validation.one_line_errors(self, validation.entry_values(self)):
            return super().predict(x, batch_size, *args, **kwargs)

    # -- inference ----------------------------------------------------------------------
    def predict_step(self, *args, **kwargs):
        """Like ``keras.Model.predict_step`` but returns only the main ``"logits"``."""
        result = super().predict_step(*args, **kwargs)
        if keras.backend.backend() == "jax":  # (outputs, non_trainable_variables)
            outputs, state = result
            return (outputs[MAIN_OUTPUT] if isinstance(outputs, dict) else outputs), state
        return result[MAIN_OUTPUT] if isinstance(result, dict) else result

    def inference_model(self, name=None):
        """A single-output ``keras.Model`` images -> main logits, sharing this model's weights.

        Use it for ``export()`` / TFLite / ONNX, where one output is expected.
        """
        return keras.Model(
            self.inputs[0], self.get_layer(MAIN_OUTPUT).output, name=name or f"{self.name}_inference"
        )

    # -- porting weights ----------------------------------------------------------------
    def reference_weight_mapping(self, source="mmseg"):
        """``{checkpoint key: (variable, layout)}`` for
        ``keras_segattn.convert.load_reference_weights(model, state_dict_or_path)``.

        ``source="mmseg"``: a whole mmsegmentation checkpoint (``backbone.*``,
        ``decode_head.*``, ``auxiliary_head.*``); needs a ``*_v1c`` backbone and a model with
        an mmseg counterpart (FCN, DANet, NonLocalNet, CCNet). See
        ``keras_segattn.models.mmseg_weights``.
        """
        from keras_segattn.models import mmseg_weights

        return mmseg_weights.reference_weight_mapping(self, source=source)

    # -- serialization ------------------------------------------------------------------
    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        config.update(self._segattn_config)
        if "input_shape" in config and config["input_shape"] is not None:
            config["input_shape"] = list(config["input_shape"])
        config["backbone"] = keras.saving.serialize_keras_object(self.backbone)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if isinstance(config.get("input_shape"), list):
            config["input_shape"] = tuple(config["input_shape"])
        return cls(**config)

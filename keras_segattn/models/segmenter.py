"""``Segmenter``: the one segmentation model, any backbone x any decode head.

Like mmsegmentation's ``EncoderDecoder`` and KerasHub's ``ImageSegmenter``::

    images (B, H, W, 3) RGB in [0, 255], any numeric dtype
      -> ImageNormalization (backbones.input_normalization(backbone))   layer "normalize"
      -> backbone pyramid features {"P2".."P5"} (backbones.pyramid_outputs) layer "backbone"
      -> decode head (+ auxiliary heads), each on the levels it declares  layers "head", ...
      -> Resize(align_corners) of every logits map to (H, W), float32    layers "logits", ...

Outputs are a **dict** of float32 logits ``(B, H, W, num_classes)`` at the input resolution,
named by the heads (``"logits"`` is the prediction; auxiliary outputs ``"aux"``, DANet's
``"pam"``/``"cam"``, ...); image-level outputs ``(B, num_classes)`` (SANet's
``"image_logits"``) pass through a float32 ``Identity`` of that name. ``"P4"`` is ResNet stage
3 (``layer3``), ``"P5"`` stage 4 (``layer4``); with output stride 8 both have stride 8.

What the segmenter provides:

* ``compile()`` with no arguments: the recipe (``keras_segattn.recipe``): SGD momentum 0.9,
  poly LR (power 0.9, optional warm-up), weight decay 5e-4, CE with ``ignore_class=255`` on
  every output weighted by the heads' ``loss_weights``, ``MeanIoU`` on ``"logits"``.
  Explicit arguments work as in Keras.
* ``fit``/``evaluate`` with a single label mask ``y`` ``(B, H, W)`` or ``(B, H, W, 1)``: it
  is applied to every output; a dict ``y`` keyed like the outputs also works.
* ``predict()`` returns only the main logits; ``model(x)`` returns the full dict.
* ``inference_model()``: a single-output ``keras.Model`` (images -> main logits) sharing the
  weights, for ``export``/TFLite/ONNX.
* ``reference_weight_mapping(source="mmseg")``: a whole mmsegmentation checkpoint
  (``backbone.*``, ``decode_head.*``, ``auxiliary_head.*``) from the backbone's and each
  head's own mapping.
* ``get_config``: the backbone and the heads as nested Keras objects (``.keras`` round trip).

Example:
>>> from keras_segattn import backbones, heads, models  # doctest: +SKIP
>>> model = models.Segmenter(
...     backbone=backbones.get_backbone("resnet101"),
...     decode_head=heads.CCHead(19, recurrence=2),
...     auxiliary_heads=[heads.auxiliary_fcn_head(19)])  # doctest: +SKIP
>>> model.compile(steps=80000)  # doctest: +SKIP
"""

import difflib
import inspect
import warnings

import keras
import numpy as np

from keras_segattn import recipe, validation
from keras_segattn.backbones import (
    LEVELS,
    PyramidBackbone,
    get_backbone,
    input_normalization,
    pyramid_outputs,
)
from keras_segattn.common import MAIN_OUTPUT
from keras_segattn.heads.base import Head
from keras_segattn.layers.normalization import ImageNormalization
from keras_segattn.layers.resize import Resize
from keras_segattn.models import presets


def resolve_backbone(backbone, output_stride=None, input_shape=None, weights=None,
                     multi_grid=None):
    """A backbone ``keras.Model`` honouring ``output_stride``
    (``keras_segattn.backbones.get_backbone``): a name (built; default output stride 8), a
    serialized backbone dict, or an instance (a ResNet is rebuilt dilated at
    ``output_stride`` with its weights, any other pyramid backbone must have that stride;
    ``None`` keeps the instance's own stride). ``input_shape``: for a name, default
    ``(None, None, 3)``; for an instance, ``None`` keeps its own."""
    if not isinstance(backbone, (str, dict, keras.Model)):
        raise ValueError(
            "backbone must be a backbone name (see keras_segattn.backbones) or a backbone "
            f"keras.Model with pyramid outputs; got {type(backbone).__name__}."
        )
    if isinstance(backbone, str):
        output_stride = 8 if output_stride is None else output_stride
        input_shape = (None, None, 3) if input_shape is None else input_shape
    return get_backbone(backbone, output_stride=output_stride, multi_grid=multi_grid,
                        weights=weights,
                        input_shape=None if input_shape is None else tuple(input_shape))


def _check_fixed_input_size(backbone, input_shape):
    """A backbone built for one image size (KerasHub's MiT takes its ``image_shape``) runs at
    that size only: the model's ``input_shape`` must name it, else its call would fail deep
    inside the backbone."""
    own = tuple(backbone.input_shape[1:])
    if any(fixed is not None and size != fixed
           for size, fixed in zip(input_shape[:2], own[:2])):
        named = backbone.backbone if isinstance(backbone, PyramidBackbone) else backbone
        raise ValueError(
            f"backbone {named.name!r} ({type(named).__name__}) takes images of one size, "
            f"input shape {own}; build the model with input_shape={own} "
            f"(got input_shape={tuple(input_shape)})."
        )


def feature_extractor(backbone, levels):
    """``keras.Model`` named ``"backbone"``: images -> ``{level: feature}``, sharing the
    backbone's layers and weights."""
    return keras.Model(backbone.inputs, pyramid_outputs(backbone, levels), name="backbone")


def resize_outputs(logits, inputs, align_corners=False):
    """Every per-pixel logits map resized to the input's size (float32 ``Resize`` layers named
    after the outputs); image-level ``(B, K)`` outputs through a float32 ``Identity``."""
    outputs = {}
    for name, value in logits.items():
        if len(value.shape) == 4:
            outputs[name] = Resize(align_corners=align_corners, dtype="float32",
                                   name=name)(value, inputs)
        else:
            outputs[name] = keras.layers.Identity(dtype="float32", name=name)(value)
    return outputs


def _per_pixel(value):
    """A label map or per-pixel weight, ``(B, H, W)`` or ``(B, H, W, 1)``, as ``(B, H, W)``."""
    if getattr(value.shape, "rank", 0) is None:
        # TensorFlow retraces the step with a rank-unknown label once it has seen labels of
        # two ranks ((B, H, W) and (B, H, W, 1)): keep the (B, H, W) of either.
        import tensorflow as tf

        size = tf.shape(value)
        return tf.reshape(value, [size[0], size[1], size[2]])
    if len(value.shape) == 4 and value.shape[-1] == 1:
        return keras.ops.squeeze(value, axis=-1)
    return value


def class_weight_as_sample_weight(class_weight, num_classes, x, y, sample_weight=None):
    """``fit(class_weight=...)`` for segmentation: each pixel weighed by its class's weight
    (mmseg's ``CrossEntropyLoss(class_weight=...)``), as ``(x, y, sample_weight)`` for
    ``keras.Model.fit``. Keras' own ``class_weight`` takes one label per sample and failed on
    label maps with ``only 0-dimensional arrays can be converted to Python scalars``.

    ``class_weight``: ``{class index: weight}`` (classes left out weigh 1) or a sequence of
    ``num_classes`` weights; finite and >= 0. NumPy labels give a ``(B, H, W)`` weight
    array, multiplied by ``sample_weight`` if given; a ``tf.data`` dataset of ``(images,
    labels)`` or ``(images, labels, weights)`` batches is mapped to add (or multiply) the
    weights. Pixels labelled 255 (ignored) weigh 0."""
    import tensorflow as tf

    if isinstance(class_weight, dict):
        table = np.ones(num_classes, "float64")
        for key, value in class_weight.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) \
                    or not 0 <= key < num_classes:
                raise ValueError(f"class_weight: key {key!r} is not a class index in "
                                 f"[0, {num_classes}).")
            table[key] = value if isinstance(value, (int, float, np.number)) else np.nan
    else:
        try:
            table = np.asarray(class_weight, "float64")
        except (TypeError, ValueError):  # strings, nested lists of other lengths
            table = np.zeros(0)
        if table.shape != (num_classes,):
            raise ValueError(f"class_weight must be a dict {{class index: weight}} or "
                             f"{num_classes} weights; got {class_weight!r}.")
    if not (np.isfinite(table).all() and (table >= 0).all()):
        raise ValueError(f"class_weight: every weight must be a finite number >= 0; got "
                         f"{class_weight!r}.")
    lookup = np.zeros(256, "float32")  # labels are checked to be < num_classes or 255
    lookup[:num_classes] = table
    if y is not None and not isinstance(y, tf.data.Dataset):  # arrays (checked by fit)
        labels = np.asarray(y).astype("int64")
        weights = lookup[labels.reshape(labels.shape[:3])]
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, "float32")
            weights = weights * (sample_weight.reshape(-1, 1, 1) if sample_weight.ndim == 1
                                 else sample_weight.reshape(weights.shape))
        return x, y, weights
    if isinstance(x, tf.data.Dataset) and y is None:
        table_tensor = tf.constant(lookup)

        def weigh(images, labels, weights=None):
            pixel = tf.gather(table_tensor, tf.cast(labels, tf.int32))
            if len(pixel.shape) == 4:
                pixel = pixel[..., 0]
            if weights is not None:
                weights = tf.cast(weights, tf.float32)
                pixel = pixel * (weights[:, None, None] if len(weights.shape) == 1
                                 else tf.reshape(weights, tf.shape(pixel)))
            return images, labels, pixel

        return x.map(weigh), None, sample_weight
    raise TypeError("class_weight works with NumPy labels and tf.data datasets of (images, "
                    f"labels) batches; got x of type {type(x).__name__}. Pass per-pixel "
                    "weights as sample_weight instead.")


def check_keyword_arguments(model_class, kwargs):
    """A ``TypeError`` naming a keyword argument the model does not take, with the closest
    one it does: Keras' functional ``Model`` ignores the keywords it does not know (only
    ``name`` and ``trainable`` reach it), so a misspelt option (``output_strid=16``) would
    build another model than asked, silently."""
    unknown = sorted(set(kwargs) - {"name", "trainable"})
    if not unknown:
        return
    known = [name for name in inspect.signature(model_class.__init__).parameters
             if name not in ("self", "arguments", "kwargs")] + ["name", "trainable"]
    close = difflib.get_close_matches(unknown[0], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise TypeError(f"{model_class.__name__}: unknown argument {unknown[0]!r}{hint}; it takes "
                    f"{', '.join(known)}.")


def _check_heads(decode_head, auxiliary_heads):
    heads = [decode_head, *auxiliary_heads]
    for head in heads:
        if not isinstance(head, Head):
            raise TypeError(
                "Segmenter: decode_head and auxiliary_heads must be keras_segattn.heads heads "
                f"(heads.base.Head), got {type(head).__name__}."
            )
    if MAIN_OUTPUT not in decode_head.output_names:
        raise ValueError(
            f"Segmenter: the decode head must have a {MAIN_OUTPUT!r} output, got "
            f"{list(decode_head.output_names)}."
        )
    names = [name for head in heads for name in head.output_names]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"Segmenter: output names {duplicates} are used by more than one head; give each "
            "auxiliary head its own output_names (e.g. output_names='aux2')."
        )
    layer_names = [head.name for head in heads]
    if len(set(layer_names)) != len(layer_names) or set(layer_names) & {"normalize", "backbone"}:
        raise ValueError(f"Segmenter: the heads need distinct layer names, got {layer_names}.")
    for head in heads[1:]:
        if head.num_classes != decode_head.num_classes:
            raise ValueError(
                f"Segmenter: auxiliary head {head.name!r} has num_classes={head.num_classes}, "
                f"the decode head {decode_head.num_classes}."
            )
    return heads


@keras.saving.register_keras_serializable(package="keras_segattn")
class Segmenter(keras.Model):
    """Backbone -> decode head (+ auxiliary heads) -> logits resized to the input.

    Args:
        backbone: a backbone ``keras.Model`` exposing ``P2``..``P5``
            (``keras_segattn.backbones.pyramid_outputs``: KerasHub ``pyramid_outputs`` or
            KerasCV ``pyramid_level_inputs``), or a ``keras_segattn.backbones`` name.
        decode_head: a ``keras_segattn.heads`` head with a ``"logits"`` output (layer name:
            keep the default ``"head"`` for the exporters and ``model.get_layer("head")``).
        auxiliary_heads: heads with other output names, e.g.
            ``[heads.auxiliary_fcn_head(num_classes)]`` (``"aux"`` on ``P4``, weight 0.4).
        input_shape: ``(H, W, 3)``; ``None`` sizes allowed. Default ``(None, None, 3)``.
        align_corners: the final bilinear resize. Default False (mmseg).
        **kwargs: ``name``, ``trainable``.
    """

    def __init__(self, backbone, decode_head, auxiliary_heads=(), input_shape=(None, None, 3),
                 align_corners=False, **kwargs):
        check_keyword_arguments(type(self), kwargs)
        auxiliary_heads = list(auxiliary_heads or ())
        heads = _check_heads(decode_head, auxiliary_heads)
        backbone = resolve_backbone(
            backbone, input_shape=input_shape if isinstance(backbone, str) else None)
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}.")
        _check_fixed_input_size(backbone, input_shape)
        inputs = keras.Input(shape=input_shape, name="images")
        x = ImageNormalization(**input_normalization(backbone), name="normalize")(inputs)
        levels = [level for level in LEVELS if any(level in h.in_levels for h in heads)]
        logits, loss_weights = self._decode(x, feature_extractor(backbone, levels), heads,
                                            bool(align_corners))
        outputs = resize_outputs(logits, inputs, bool(align_corners))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_heads = auxiliary_heads
        self.num_classes = decode_head.num_classes
        self.align_corners = bool(align_corners)
        self._input_shape_arg = input_shape
        self._segattn_output_names = tuple(sorted(outputs))
        self._segattn_loss_weights = {name: loss_weights[name] for name in outputs}
        self._image_level_outputs = tuple(
            sorted(name for name, value in logits.items() if len(value.shape) == 2))

    def _decode(self, images, extractor, heads, align_corners):
        """``({output name: logits at feature resolution}, {output name: loss weight})`` from
        the normalised images: every head on the features (``AttentionToScale`` overrides
        this to run over scales)."""
        features = extractor(images)
        logits, loss_weights = {}, {}
        for head in heads:
            logits.update(head(features))
            loss_weights.update(head.loss_weights)
        return logits, loss_weights

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
                optimizer_type="sgd", steps=80000, learning_rate=0.01, momentum=0.9,
                weight_decay=5e-4, power=0.9, end_learning_rate=1e-4, warmup_steps=0,
                head_lr_multiplier=1.0, gradient_accumulation_steps=None, **kwargs):
        """Compile; the defaults are the recipe (``keras_segattn.recipe``, mmseg's).

        Args:
            optimizer: ``"auto"``: ``recipe.optimizer``: ``keras_segattn.optimizers.SGD``
                (PyTorch weight decay, ``momentum``) or AdamW (``optimizer_type``) with the
                ``WarmupPolyDecay`` schedule. Anything else goes to ``keras.Model.compile``.
            loss: ``"auto"``: CE with ``ignore_class=255`` on every pixel output,
                ``SANetCategoricalLoss`` on image-level outputs.
            loss_weights: ``"auto"``: ``default_loss_weights`` (the heads') when ``loss`` is
                ``"auto"`` or a dict, else ``None``.
            metrics: ``"auto"``: ``MeanIoU(num_classes, ignore_class=255)`` on ``"logits"``
                (logged as ``logits_mean_iou``).
            optimizer_type: ``"sgd"`` (mmseg) or ``"adamw"``.
            steps: total training iterations of the poly schedule (mmseg: 40k/80k/160k).
            learning_rate, momentum, weight_decay, power, end_learning_rate: the recipe's
                numbers (mmseg: 0.01, 0.9, 5e-4, 0.9, 1e-4).
            warmup_steps: linear warm-up length (0: mmseg's CNN recipes).
            head_lr_multiplier: SGD's learning-rate factor of every variable outside the
                backbone (1.0; the official DANet recipe uses 10).
            gradient_accumulation_steps: Keras' gradient accumulation (``None``: off).
            **kwargs: other ``keras.Model.compile`` arguments.
        """
        numbers = dict(optimizer_type=optimizer_type, steps=int(steps),
                       learning_rate=float(learning_rate), momentum=float(momentum),
                       weight_decay=float(weight_decay or 0.0), power=float(power),
                       end_learning_rate=float(end_learning_rate),
                       warmup_steps=int(warmup_steps),
                       head_lr_multiplier=float(head_lr_multiplier),
                       gradient_accumulation_steps=gradient_accumulation_steps or None)
        everything_auto = (optimizer == "auto" and loss == "auto" and loss_weights == "auto"
                           and metrics == "auto" and not kwargs)
        if optimizer == "auto":
            optimizer = recipe.optimizer(self, **numbers)
        if loss_weights == "auto":
            loss_weights = (
                self.default_loss_weights if (loss == "auto" or isinstance(loss, dict)) else None
            )
            if isinstance(loss, dict) and loss_weights is not None:
                loss_weights = {k: v for k, v in loss_weights.items() if k in loss}
        if loss == "auto":
            loss = recipe.losses(self._segattn_output_names, self.num_classes,
                                 self._image_level_outputs)
        if metrics == "auto":
            metrics = recipe.metrics(self.num_classes)
        super().compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights,
                        metrics=metrics, **kwargs)
        self._segattn_recipe = numbers if everything_auto else None

    def head_lr_multipliers(self, multiplier):
        """``recipe.head_lr_multipliers(self, multiplier)``."""
        return recipe.head_lr_multipliers(self, multiplier)

    def get_compile_config(self):
        recipe_numbers = getattr(self, "_segattn_recipe", None)
        if self.compiled and recipe_numbers is not None:
            return {"segattn_recipe": dict(recipe_numbers)}
        return super().get_compile_config()

    def compile_from_config(self, config):
        if isinstance(config, dict) and "segattn_recipe" in config:
            self.compile(**config["segattn_recipe"])
        else:
            try:
                self.compile(**keras.saving.deserialize_keras_object(config))
            except Exception as error:  # noqa: BLE001 - loading must not fail on compile state
                warnings.warn(f"{type(self).__name__}: could not re-compile after loading "
                              f"({error}); call compile() yourself.")
                return
        if self.built:  # so that the saved optimizer state can be loaded
            self.optimizer.build(self.trainable_variables)

    def _broadcast(self, value, y_pred):
        """A single label mask -> one per output."""
        if value is None or not isinstance(y_pred, dict) or isinstance(value, dict):
            return value
        value = _per_pixel(value)
        return {name: value for name in y_pred}

    def _sample_weights(self, sample_weight, y_pred):
        """``fit(sample_weight=...)`` -> one weight tensor per output: ``(B,)`` weighs each
        image (every pixel of it), ``(B, H, W)`` or ``(B, H, W, 1)`` each pixel. Image-level
        outputs (SANet's ``image_logits``) take the per-image weights, and weight 1 when
        the weights are per pixel. Each output gets a tensor of its own at the pixel outputs' full
        shape: Keras' masked loss (``ignore_class``) multiplies the weight by the mask in
        place on torch, which broke the gradient of a weight shared between outputs."""
        if sample_weight is None or not isinstance(y_pred, dict) or isinstance(sample_weight,
                                                                              dict):
            return sample_weight
        ops = keras.ops
        if getattr(sample_weight.shape, "rank", 0) is None:
            # TensorFlow retraces the step with a rank-unknown weight once it has seen
            # weights of two ranks: make it per pixel, (B, H, W), whichever it is.
            import tensorflow as tf

            pixels = next(tf.shape(p)[:3] for n, p in y_pred.items()
                          if n not in self._image_level_outputs)
            sample_weight = tf.cond(
                tf.rank(sample_weight) == 1,
                lambda: tf.broadcast_to(tf.reshape(sample_weight, [-1, 1, 1]), pixels),
                lambda: tf.reshape(sample_weight, pixels))
        per_image = len(sample_weight.shape) == 1
        if not per_image:
            sample_weight = _per_pixel(sample_weight)
        sample_weight = ops.cast(sample_weight, "float32")
        weights = {}
        for name, prediction in y_pred.items():
            if name in self._image_level_outputs:
                weights[name] = (sample_weight + 0.0 if per_image else
                                 ops.ones_like(sample_weight[:, 0, 0]))
            elif per_image:
                weights[name] = (ops.ones(ops.shape(prediction)[:3], "float32")
                                 * sample_weight[:, None, None])
            else:
                weights[name] = sample_weight + 0.0
        return weights

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(
            x=x, y=self._broadcast(y, y_pred), y_pred=y_pred,
            sample_weight=self._sample_weights(sample_weight, y_pred), training=training,
        )

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(
            x, self._broadcast(y, y_pred), y_pred, self._sample_weights(sample_weight, y_pred)
        )

    # -- input checks at the entry points (keras_segattn.validation; issue 10) ---------
    # Labels outside [0, num_classes) other than 255, float labels, NaN/Inf images, and
    # images or labels of the wrong shape fail with one-line ValueErrors: arrays are checked
    # here, tf.data datasets per batch in their own graph (shapes from the element spec);
    # the errors of those in-graph checks are re-raised in one line (and on JAX the model
    # stays usable after such a failure).
    def fit(self, x=None, y=None, batch_size=None, *args, **kwargs):
        channels = self._input_shape_arg[-1]
        x, y = validation.checked_data(x, y, self.num_classes, batch_size, channels=channels)
        if kwargs.get("class_weight") is not None:
            x, y, kwargs["sample_weight"] = class_weight_as_sample_weight(
                kwargs.pop("class_weight"), self.num_classes, x, y, kwargs.get("sample_weight"))
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = validation.checked_validation_data(
                kwargs["validation_data"], self.num_classes,
                kwargs.get("validation_batch_size") or batch_size, channels=channels)
        values = validation.entry_values(self)
        if values:
            release = keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda batch, logs=None: values.clear())
            kwargs["callbacks"] = [release, *(kwargs.get("callbacks") or [])]
        with validation.one_line_errors(self, values):
            return super().fit(x, y, batch_size, *args, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, *args, **kwargs):
        if x is not None:
            x, y = validation.checked_data(x, y, self.num_classes, batch_size,
                                           channels=self._input_shape_arg[-1])
        with validation.one_line_errors(self, validation.entry_values(self)):
            return super().evaluate(x, y, batch_size, *args, **kwargs)

    def predict(self, x, batch_size=None, *args, **kwargs):
        x = validation.checked_images(x, batch_size, channels=self._input_shape_arg[-1])
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

        ``source="mmseg"``: a whole mmsegmentation ``EncoderDecoder`` checkpoint: the
        backbone's mapping under ``backbone.`` (a ``*_v1c`` backbone: mmseg's ResNetV1c), the
        decode head's ``reference_weight_mapping(source="mmseg")`` under ``decode_head.`` and
        the auxiliary head's under ``auxiliary_head.`` (``auxiliary_head.<i>.`` for several,
        mmseg's ModuleList). Heads with an mmseg counterpart: FCNHead, NLHead, DANetHead,
        CCHead, ISAHead(layout="mmseg") (ReLU; see each head).

        Raises:
            ValueError: for another source or backbone, a head without an mmseg counterpart,
                or weights the checkpoint would not cover (nothing is loaded then).
        """
        from keras_segattn import convert
        from keras_segattn.backbones import DilatedResNetV1cBackbone

        owner = type(self).__name__
        if source != "mmseg":
            raise ValueError(
                f"reference_weight_mapping: unknown source {source!r}; whole-model mappings "
                "exist for ['mmseg']. For a head alone, call model.get_layer('head')"
                ".reference_weight_mapping() (the official repository's keys)."
            )
        if not isinstance(self.backbone, DilatedResNetV1cBackbone):
            raise ValueError(
                f"{owner}: mmsegmentation checkpoints use a ResNetV1c backbone (deep 3x3 stem), "
                f"but this model has {self.backbone.name!r} ({type(self.backbone).__name__}). "
                "Build it with backbone='resnet50_v1c' or 'resnet101_v1c' "
                "(keras_segattn.backbones names ending in '_v1c')."
            )
        mapping = convert.prefixed("backbone", self.backbone.reference_weight_mapping())
        prefixes = [("decode_head", self.decode_head)]
        if len(self.auxiliary_heads) == 1:
            prefixes.append(("auxiliary_head", self.auxiliary_heads[0]))
        else:
            prefixes += [(f"auxiliary_head.{i}", h) for i, h in enumerate(self.auxiliary_heads)]
        for prefix, head in prefixes:
            if not hasattr(head, "reference_weight_mapping"):
                raise ValueError(
                    f"{owner}: no mmsegmentation counterpart for its {prefix} "
                    f"({type(head).__name__}). Whole mmseg checkpoints map onto segmenters of "
                    "FCNHead, NLHead, DANetHead and CCHead (FCN, NonLocalNet, DANet, CCNet)."
                )
            try:
                head_mapping = head.reference_weight_mapping(source="mmseg")
            except TypeError:  # a head whose only mapping is its official repository's
                raise ValueError(
                    f"{owner}: no mmsegmentation counterpart for its {prefix} "
                    f"({type(head).__name__}). Whole mmseg checkpoints map onto segmenters of "
                    "FCNHead, NLHead, DANetHead and CCHead (FCN, NonLocalNet, DANet, CCNet)."
                ) from None
            mapping.update(convert.prefixed(prefix, head_mapping))
        mapped = {id(variable) for variable, _ in mapping.values()}
        unmapped = [w.path for w in self.weights if id(w) not in mapped]
        if unmapped:
            raise ValueError(
                f"{owner}: these weights have no mmsegmentation counterpart, so a checkpoint "
                f"would leave them random: {unmapped[:8]}{' ...' if len(unmapped) > 8 else ''}."
            )
        return mapping

    # -- presets ------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset, **kwargs):
        """A pretrained model of this class from a preset name or directory
        (``keras_segattn.models.from_preset``; e.g.
        ``DANet.from_preset("danet_resnet101_cityscapes")``)."""
        return presets.from_preset(preset, expected_class=cls, **kwargs)

    @classmethod
    def presets(cls):
        """Names of the built-in presets of this class (``list_presets(model=cls)``)."""
        return presets.list_presets(model=None if cls is Segmenter else cls)

    def save_to_preset(self, preset_dir, **metadata):
        """Write this model as a preset directory (``keras_segattn.models.save_to_preset``)."""
        presets.save_to_preset(self, preset_dir, **metadata)

    # -- serialization ------------------------------------------------------------------
    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "decode_head": keras.saving.serialize_keras_object(self.decode_head),
            "auxiliary_heads": [keras.saving.serialize_keras_object(h)
                                for h in self.auxiliary_heads],
            "input_shape": list(self._input_shape_arg),
            "align_corners": self.align_corners,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "decode_head"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        config["auxiliary_heads"] = [
            keras.saving.deserialize_keras_object(h) if isinstance(h, dict) else h
            for h in config.get("auxiliary_heads", ())
        ]
        if isinstance(config.get("input_shape"), list):
            config["input_shape"] = tuple(config["input_shape"])
        return cls(**config)

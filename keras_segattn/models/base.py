"""The named models' base (``NamedSegmenter``) and their registry (``get``/``list_models``).

A named model (``DANet``, ``CCNet``, ...) is a one-line constructor with the paper's options
whose body is a **recipe**: which heads, with which widths, on which levels; the graph, the
training recipe, saving and weight porting are ``Segmenter``'s. The whole pattern::

    @register_model
    @keras.saving.register_keras_serializable(package="keras_segattn")
    class MyNet(NamedSegmenter):
        def __init__(self, num_classes, backbone="resnet50", output_stride=8, aux_head=True,
                     input_shape=(None, None, 3), backbone_weights=None, align_corners=False,
                     channels=512, dropout=0.1, activation="relu", **kwargs):
            arguments = constructor_arguments(locals())
            head = heads.MyHead(num_classes, channels=channels, dropout=dropout,
                                activation=activation, name="head")
            super().__init__(arguments, decode_head=head,
                             auxiliary_heads=standard_auxiliary_heads(arguments), **kwargs)

``constructor_arguments(locals())`` (the first line) checks ``num_classes`` and
``activation`` in one line naming the model and the value, and keeps every argument for
``get_config``; ``standard_auxiliary_heads(arguments)`` is mmseg's auxiliary FCN head
(or none with ``aux_head=False``); ``NamedSegmenter`` builds the backbone from
``backbone``, ``output_stride``, ``input_shape`` and ``backbone_weights`` and serializes the constructor arguments (the
backbone as a nested Keras object), so ``keras.models.load_model`` returns the same class.
``register_model`` adds the class to ``get``/``list_models`` under its lower-cased name.
"""

import keras

from keras_segattn import heads
from keras_segattn.common import check_activation, check_num_classes
from keras_segattn.models.segmenter import Segmenter, check_keyword_arguments, resolve_backbone

_MODEL_REGISTRY = {}

# The former name of the model base class (the named models derive from Segmenter).
SegmentationModel = Segmenter


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


def constructor_arguments(arguments):
    """A named model's constructor arguments from its ``locals()`` on entry.

    Drops ``self``/``kwargs`` (refusing keywords other than ``name`` and ``trainable``:
    ``check_keyword_arguments``), checks ``num_classes`` (a positive int) and ``activation``
    (``"relu"``/``"leaky_relu"``) with errors naming the model, and returns the rest.
    """
    owner = type(arguments["self"]).__name__
    check_keyword_arguments(type(arguments["self"]), arguments.get("kwargs", {}))
    arguments = {k: v for k, v in arguments.items() if k not in ("self", "kwargs", "__class__")}
    check_num_classes(owner, arguments["num_classes"])
    if "activation" in arguments:
        check_activation(owner, arguments["activation"])
    arguments["input_shape"] = tuple(arguments["input_shape"])
    if len(arguments["input_shape"]) != 3:
        raise ValueError(
            f"{owner}: input_shape must be (height, width, channels), got "
            f"{arguments['input_shape']}."
        )
    return arguments


def standard_auxiliary_heads(arguments, **options):
    """``[heads.auxiliary_fcn_head(...)]`` (mmseg's FCN head on stage 3, output ``"aux"``,
    weight 0.4) with the model's ``num_classes``, ``aux_channels`` (256 when the model has no
    such argument), ``dropout`` and ``activation``; ``[]`` when ``aux_head`` is False.
    ``options`` override ``auxiliary_fcn_head``'s arguments (``use_bias=True``, ...)."""
    if not arguments["aux_head"]:
        return []
    kwargs = dict(channels=arguments.get("aux_channels", 256), dropout=arguments["dropout"],
                  activation=arguments["activation"])
    kwargs.update(options)
    return [heads.auxiliary_fcn_head(arguments["num_classes"], **kwargs)]


class NamedSegmenter(Segmenter):
    """A ``Segmenter`` built from a named model's constructor arguments (see the module
    docstring).

    The arguments every named model shares:

    * ``num_classes``: int >= 1.
    * ``backbone``: a ``keras_segattn.backbones`` name (default ``"resnet50"``), a
      serialized backbone dict or a backbone model (used as is).
    * ``output_stride``: 8 (default), 16 or 32 (for a backbone given by name).
    * ``aux_head``: bool, the auxiliary head(s) (default True).
    * ``input_shape``: ``(H, W, 3)``, ``None`` sizes allowed (default ``(None, None, 3)``).
    * ``backbone_weights``: ``None`` (random init, offline), ``"imagenet"`` or a file.
    * ``align_corners``: the final bilinear resize.

    Args:
        arguments: ``constructor_arguments(locals())`` of the subclass: ``num_classes``,
            ``backbone`` (name, dict or model), ``output_stride``, ``input_shape``,
            ``backbone_weights``, ``align_corners`` and the model's own options.
        decode_head, auxiliary_heads: the recipe's heads (``Segmenter``'s).
        **kwargs: ``name``, ``trainable``.
    """

    def __init__(self, arguments, *, decode_head, auxiliary_heads=(), **kwargs):
        backbone = resolve_backbone(
            arguments["backbone"], output_stride=arguments.get("output_stride", 8),
            input_shape=arguments["input_shape"], weights=arguments.get("backbone_weights"),
        )
        super().__init__(backbone=backbone, decode_head=decode_head,
                         auxiliary_heads=auxiliary_heads, input_shape=arguments["input_shape"],
                         align_corners=arguments["align_corners"], **kwargs)
        self._segattn_config = {k: v for k, v in arguments.items() if k != "backbone"}

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        config.update({k: list(v) if isinstance(v, tuple) else v
                       for k, v in self._segattn_config.items()})
        config["backbone"] = keras.saving.serialize_keras_object(self.backbone)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if isinstance(config.get("input_shape"), list):
            config["input_shape"] = tuple(config["input_shape"])
        # The serialized backbone is rebuilt here and its weights come from the saved file:
        # ``backbone_weights`` (how the original was initialised) is recorded, not reloaded.
        backbone_weights = config.pop("backbone_weights", None)
        model = cls(**config)
        model._segattn_config["backbone_weights"] = backbone_weights
        return model

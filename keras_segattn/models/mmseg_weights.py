"""Whole-model weight porting from mmsegmentation checkpoints.

An mmsegmentation (open-mmlab/mmsegmentation) ``EncoderDecoder`` checkpoint stores one
``state_dict`` with three groups of keys: ``backbone.*`` (``ResNetV1c``), ``decode_head.*``
and ``auxiliary_head.*`` (the FCN auxiliary head on stage 3). With a model built on a
``*_v1c`` backbone (``keras_segattn.backbones.DilatedResNetV1cBackbone``)::

    model = keras_segattn.models.DANet(num_classes=19, backbone="resnet50_v1c")
    keras_segattn.convert.load_reference_weights(model, "danet_r50-d8_....pth")

loads every weight: ``SegmentationModel.reference_weight_mapping()`` calls
``reference_weight_mapping(model)`` here, which joins the backbone's mapping and each head's
own mapping, renamed to mmseg's module paths. The renames only change names: the maths of
each head was checked against mmseg's code (same layers, same order, same softmax axes).

Supported (mmseg config -> keras_segattn model, with a ``*_v1c`` backbone):

* ``fcn_r*-d8``: ``FCN`` (``FCNHead``: ``convs.{i}.conv/bn``, ``conv_cat``, ``conv_seg``).
* ``danet_r*-d8``: ``DANet`` (``DAHead``, ``mmseg/models/decode_heads/da_head.py``): our
  ``DANetHead`` has the official DANet names, renamed ``conv5a -> pam_in_conv``,
  ``sa.{query,key,value}_conv -> pam.{query,key,value}_project``, ``sa.gamma ->
  pam.gamma.scale`` (mmcv ``Scale``, a 0-d parameter), ``conv51 -> pam_out_conv``,
  ``conv6 -> pam_conv_seg``, ``conv5c -> cam_in_conv``, ``sc.gamma -> cam.gamma.scale``,
  ``conv52 -> cam_out_conv``, ``conv7 -> cam_conv_seg``, ``conv8 -> conv_seg``. PAM is
  ``SelfAttentionBlock`` with plain 1x1 projections (bias), no scaling, softmax over keys;
  CAM keeps the max-minus-energy form: both identical to ours.
* ``nonlocal_r*-d8``: ``NonLocalNet`` (``NLHead`` already uses mmseg/mmcv keys).
* ``ccnet_r*-d8``: ``CCNet(activation="relu", channels=C5 // 4)`` (``CCHead``: ``conva ->
  convs.0``, ``convb -> convs.1``, ``bottleneck -> conv_cat``, the classifier ``-> conv_seg``,
  ``cca.gamma -> cca.gamma.scale``). CCNet's auxiliary head defaults to the official CCNet
  "dsn" head (3x3 conv **with** bias, 512 channels); build ``CCNet(activation="relu",
  aux_channels=256, aux_use_bias=False)`` for mmseg's bias-free FCN auxiliary head (or
  ``aux_head=False`` and drop the checkpoint's ``auxiliary_head.*`` keys).
* The auxiliary head of every model: ``FCNHead(num_convs=1, concat_input=False)``, keys
  ``convs.0.conv.weight``, ``convs.0.bn.*``, ``conv_seg.*`` (mmseg configs: 256 channels).

Not supported: mmseg's ``ISAHead`` differs from our (openseg) ISA head: it concatenates
``[attention output, residual]`` (ours ``[residual, attention output]``), its value
projection has a bias (openseg: none). The other models (CAANet, SANet, FLANet, EANet,
LANet, AttentionToScale) have no mmseg counterpart.

Every mmseg model uses ReLU heads; a head built with ``activation="leaky_relu"`` is refused.
Classifier dropout (``Dropout2d`` in mmseg, ``SpatialDropout2D`` here) has no weights.
"""

import numpy as np

from keras_segattn import convert

SOURCES = ("mmseg",)

_DANET_RENAMES = (
    ("conv5a.0", "pam_in_conv.conv"), ("conv5a.1", "pam_in_conv.bn"),
    ("sa.query_conv", "pam.query_project"), ("sa.key_conv", "pam.key_project"),
    ("sa.value_conv", "pam.value_project"), ("sa.gamma", "pam.gamma.scale"),
    ("conv51.0", "pam_out_conv.conv"), ("conv51.1", "pam_out_conv.bn"),
    ("conv6.1", "pam_conv_seg"),
    ("conv5c.0", "cam_in_conv.conv"), ("conv5c.1", "cam_in_conv.bn"),
    ("sc.gamma", "cam.gamma.scale"),
    ("conv52.0", "cam_out_conv.conv"), ("conv52.1", "cam_out_conv.bn"),
    ("conv7.1", "cam_conv_seg"),
    ("conv8.1", "conv_seg"),
)
_CCNET_RENAMES = (
    ("conva.0", "convs.0.conv"), ("conva.1", "convs.0.bn"),
    ("cca.query_conv", "cca.query_conv"), ("cca.key_conv", "cca.key_conv"),
    ("cca.value_conv", "cca.value_conv"), ("cca.gamma", "cca.gamma.scale"),
    ("convb.0", "convs.1.conv"), ("convb.1", "convs.1.bn"),
    ("bottleneck.0", "conv_cat.conv"), ("bottleneck.1", "conv_cat.bn"),
    ("bottleneck.3", "conv_seg"),
)


def rename(mapping, renames):
    """Replace the leading module path of every key (``renames``: ``(old, new)`` pairs).

    ``old`` matches a whole path component sequence: ``"sa.gamma"`` renames ``"sa.gamma"``,
    ``"conv5a.0"`` renames ``"conv5a.0.weight"``. A key no pair matches is an error (so a
    head that grows a sublayer cannot be half-ported silently).
    """
    renamed = {}
    for key, value in mapping.items():
        for old, new in renames:
            if key == old or key.startswith(old + "."):
                renamed[new + key[len(old):]] = value
                break
        else:
            raise ValueError(f"internal error: no mmseg name for reference key {key!r}")
    return renamed


def _check_relu(owner, layer):
    activation = getattr(layer, "activation", "relu")
    if activation != "relu":
        raise ValueError(
            f"{owner}: mmsegmentation heads use ReLU, but {layer.name!r} "
            f"({type(layer).__name__}) was built with activation={activation!r}; build the "
            "model with activation='relu' to load an mmseg checkpoint."
        )


def _decode_head_mapping(model):
    from keras_segattn.heads import CCHead, DANetHead, FCNHead, ISAHead, NLHead

    owner = type(model).__name__
    try:
        head = model.get_layer("head")
    except ValueError:
        head = None
    if isinstance(head, ISAHead):
        raise ValueError(
            f"{owner}: mmsegmentation's ISAHead cannot be mapped onto this ISANet: mmseg "
            "concatenates [attention output, residual] before out_conv (ours, like openseg, "
            "[residual, attention output]) and its value projections have a bias (openseg's "
            "none). Only the backbone ports: load_reference_weights(model.backbone, "
            "state_dict, strip_prefix='backbone.') after dropping the other keys."
        )
    if isinstance(head, (FCNHead, NLHead)):  # NLHead is an FCNHead: mmseg keys already
        _check_relu(owner, head)
        if head.use_bias:
            raise ValueError(f"{owner}: mmseg's FCNHead convs have no bias (use_bias=False).")
        return head.reference_weight_mapping()
    if isinstance(head, DANetHead):
        _check_relu(owner, head)
        return rename(head.reference_weight_mapping(), _DANET_RENAMES)
    if isinstance(head, CCHead):
        _check_relu(owner, head)
        return rename(head.reference_weight_mapping(), _CCNET_RENAMES)
    raise ValueError(
        f"{owner}: no mmsegmentation counterpart for its head "
        f"({type(head).__name__ if head is not None else 'none'}). Whole mmseg checkpoints map "
        "onto FCN, DANet, NonLocalNet and CCNet (see keras_segattn.models.mmseg_weights)."
    )


def _auxiliary_head_mapping(model):
    from keras_segattn.heads import FCNHead

    owner = type(model).__name__
    try:
        aux = model.get_layer("aux_head")
    except ValueError:
        return {}
    if not isinstance(aux, FCNHead) or aux.use_bias:
        raise ValueError(
            f"{owner}: its auxiliary head ({type(aux).__name__}"
            f"{', conv with bias' if getattr(aux, 'use_bias', False) else ''}) is not "
            "mmsegmentation's bias-free FCN auxiliary head. Build the model with "
            "aux_use_bias=False (CCNet) or aux_head=False and drop the checkpoint's "
            "'auxiliary_head.*' keys before loading."
        )
    _check_relu(owner, aux)
    return aux.reference_weight_mapping()


def reference_weight_mapping(model, source="mmseg"):
    """``{mmseg state-dict key: (variable, layout)}`` for a whole ``SegmentationModel``.

    Args:
        model: a ``keras_segattn.models`` model with a ``*_v1c`` backbone (FCN, DANet,
            NonLocalNet, CCNet; see the module docstring).
        source: ``"mmseg"`` (mmsegmentation ``EncoderDecoder`` checkpoints).

    Raises:
        ValueError: for another backbone, an unsupported head, or a model with weights that
            the mapping would not cover (nothing is loaded then).

    Example:
    >>> model = keras_segattn.models.FCN(3, backbone="resnet_tiny_v1c", channels=8,
    ...                                  aux_channels=8)  # doctest: +SKIP
    >>> sorted(reference_weight_mapping(model))[:2]  # doctest: +SKIP
    ['auxiliary_head.conv_seg.bias', 'auxiliary_head.conv_seg.weight']
    """
    from keras_segattn.backbones import DilatedResNetV1cBackbone

    if source not in SOURCES:
        raise ValueError(
            f"reference_weight_mapping: unknown source {source!r}; whole-model mappings exist "
            f"for {list(SOURCES)}. For a head alone, call model.get_layer('head')"
            ".reference_weight_mapping() (the official repository's keys)."
        )
    owner = type(model).__name__
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, DilatedResNetV1cBackbone):
        raise ValueError(
            f"{owner}: mmsegmentation checkpoints use a ResNetV1c backbone (deep 3x3 stem), but "
            f"this model has {getattr(backbone, 'name', backbone)!r} "
            f"({type(backbone).__name__}). Build it with backbone='resnet50_v1c' or "
            "'resnet101_v1c' (keras_segattn.backbones names ending in '_v1c')."
        )
    mapping = convert.prefixed("backbone", backbone.reference_weight_mapping())
    mapping.update(convert.prefixed("decode_head", _decode_head_mapping(model)))
    mapping.update(convert.prefixed("auxiliary_head", _auxiliary_head_mapping(model)))
    mapped = {id(variable) for variable, _ in mapping.values()}
    unmapped = [w.path for w in model.weights if id(w) not in mapped]
    if unmapped:
        raise ValueError(
            f"{owner}: these weights have no mmsegmentation counterpart, so a checkpoint "
            f"would leave them random: {unmapped[:8]}{' ...' if len(unmapped) > 8 else ''}."
        )
    return mapping


def to_reference_state_dict(model, source="mmseg"):
    """The model's weights as an mmseg-keyed ``{key: np.ndarray}`` in PyTorch layouts
    (conv ``(out, in, kh, kw)``; mmcv ``Scale`` gammas 0-d), the inverse of
    ``load_reference_weights(model, state_dict)``. ``torch.save({"state_dict":
    {k: torch.from_numpy(v) ...}}, path)`` makes a checkpoint mmseg can load (no
    ``num_batches_tracked`` entries; load it with ``strict=False`` or add them)."""
    import keras

    state = {}
    for key, (variable, layout) in reference_weight_mapping(model, source).items():
        array = keras.ops.convert_to_numpy(variable)
        if layout == "conv":
            array = array.transpose(3, 2, 0, 1)
        elif layout == "linear":
            array = array.T
        elif key.endswith(".gamma.scale"):
            array = array.reshape(())
        state[key] = np.array(array, order="C")  # (ascontiguousarray would make 0-d 1-d)
    return state

"""Whole-model weight porting from mmsegmentation checkpoints.

An mmsegmentation (open-mmlab/mmsegmentation) ``EncoderDecoder`` checkpoint stores one
``state_dict`` with three groups of keys: ``backbone.*`` (``ResNetV1c``), ``decode_head.*``
and ``auxiliary_head.*`` (the FCN auxiliary head on stage 3). With a model built on a
``*_v1c`` backbone (``keras_segattn.backbones.DilatedResNetV1cBackbone``)::

    model = keras_segattn.models.DANet(num_classes=19, backbone="resnet50_v1c")
    keras_segattn.convert.load_reference_weights(model, "danet_r50-d8_....pth")

loads every weight. ``Segmenter.reference_weight_mapping(source="mmseg")`` joins the
backbone's mapping and each head's own ``reference_weight_mapping(source="mmseg")`` under
those prefixes, so a head that maps mmseg's keys ports inside any segmenter and adding a head
touches no central list. Heads with mmseg keys (each checked against mmseg's code: same
layers, same order, same softmax axes):

* ``fcn_r*-d8``: ``FCN`` (``FCNHead``: ``convs.{i}.conv/bn``, ``conv_cat``, ``conv_seg``).
* ``danet_r*-d8``: ``DANet`` (``DANetHead`` renamed to mmseg's ``DAHead``,
  ``heads.danet_head.MMSEG_RENAMES``).
* ``nonlocal_r*-d8``: ``NonLocalNet`` (``NLHead`` already uses mmseg/mmcv keys).
* ``ccnet_r*-d8``: ``CCNet(activation="relu", channels=C5 // 4)`` (``CCHead`` renamed,
  ``heads.cc_head.MMSEG_RENAMES``). CCNet's auxiliary head defaults to the official CCNet
  "dsn" head (3x3 conv **with** bias, 512 channels); build ``CCNet(activation="relu",
  aux_channels=256, aux_use_bias=False)`` for mmseg's bias-free FCN auxiliary head (or
  ``aux_head=False`` and drop the checkpoint's ``auxiliary_head.*`` keys).
* The auxiliary head of every model: ``FCNHead(num_convs=1, concat_input=False)``, keys
  ``convs.0.conv.weight``, ``convs.0.bn.*``, ``conv_seg.*`` (mmseg configs: 256 channels).

Not supported: mmseg's ``ISAHead`` differs from our (openseg) ISA head (see
``heads.ISAHead.reference_weight_mapping``). The other heads (CAA, SANet, FLANet, EANet,
LANet, Attention-to-Scale) have no mmseg counterpart. Every mmseg model uses ReLU heads; a
head built with ``activation="leaky_relu"`` is refused. Classifier dropout (``Dropout2d`` in
mmseg, ``SpatialDropout2D`` here) has no weights.
"""

import numpy as np

SOURCES = ("mmseg",)


def reference_weight_mapping(model, source="mmseg"):
    """``model.reference_weight_mapping(source)``: ``{mmseg key: (variable, layout)}`` of a
    whole ``Segmenter`` (see ``Segmenter.reference_weight_mapping``)."""
    return model.reference_weight_mapping(source=source)


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

"""Every head on the contract of ``heads.base.Head``, each inside a ``Segmenter`` on two
different backbones (the KerasCV-style ResNet V1 and mmseg's ResNetV1c)."""

import keras
import numpy as np
import pytest

from keras_segattn import backbones, heads, models
from keras_segattn.testing import assert_allclose

NUM_CLASSES = 3
# (head class, small-width arguments, its output names, image-level outputs)
HEADS = (
    (heads.FCNHead, dict(channels=8), ("logits",), ()),
    (heads.NLHead, dict(channels=8), ("logits",), ()),
    (heads.DANetHead, dict(), ("logits", "pam", "cam"), ()),
    (heads.CCHead, dict(channels=8), ("logits",), ()),
    (heads.ISAHead, dict(channels=8, key_channels=4, value_channels=8, down_factor=(2, 2)),
     ("logits",), ()),
    (heads.CAAHead, dict(filters=16, channels=8), ("logits",), ()),
    (heads.SANetHead, dict(stage_channels=8, channels=8), ("logits", "image_logits"),
     ("image_logits",)),
    (heads.FLANetHead, dict(channels=8), ("logits",), ()),
    (heads.EANetHead, dict(channels=16, key_channels=8, value_channels=16, num_heads=2),
     ("logits",), ()),
    (heads.LANetHead, dict(), ("logits",), ()),
    (heads.AttentionToScaleHead, dict(channels=8), ("logits",), ()),
)
BACKBONES = ("resnet_tiny", "resnet_tiny_v1c")


def _segmenter(head_cls, kwargs, backbone):
    return models.Segmenter(
        backbone=backbones.get_backbone(backbone, output_stride=8),
        decode_head=head_cls(NUM_CLASSES, name="head", **kwargs),
        auxiliary_heads=[heads.auxiliary_fcn_head(NUM_CLASSES, channels=8)],
    )


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("head_cls,kwargs,names,image_level", HEADS,
                         ids=[h[0].__name__ for h in HEADS])
def test_head_in_a_segmenter(head_cls, kwargs, names, image_level, backbone):
    model = _segmenter(head_cls, kwargs, backbone)
    expected = sorted(set(names) | {"aux"})
    assert model.segmentation_output_names == expected
    assert model.default_loss_weights == {**{n: 1.0 for n in names}, "aux": 0.4}
    assert model.get_layer("head") is model.decode_head
    outputs = model.compute_output_spec(keras.KerasTensor((2, 37, 45, 3)))
    for name in expected:
        shape = (2, NUM_CLASSES) if name in image_level else (2, 37, 45, NUM_CLASSES)
        assert tuple(outputs[name].shape) == shape, name
        assert keras.backend.standardize_dtype(outputs[name].dtype) == "float32", name
    # The head's variables live under its layer name, whatever the backbone.
    head_paths = [w.path for w in model.decode_head.weights]
    assert head_paths and all(p.startswith("head/") for p in head_paths)
    # A concrete pass of the head on features of the backbone's shapes: the dict form equals
    # the head's tensor form.
    spec = model.get_layer("backbone").compute_output_spec(keras.KerasTensor((1, 33, 29, 3)))
    rng = np.random.default_rng(0)
    feature_values = {level: rng.normal(size=tuple(value.shape)).astype("float32")
                      for level, value in spec.items()}
    as_dict = model.decode_head(feature_values, training=False)
    selected = [feature_values[level] for level in model.decode_head.in_levels]
    raw = model.decode_head(selected[0] if len(selected) == 1 else selected, training=False)
    raw = raw if isinstance(raw, (tuple, list)) else (raw,)
    for name, value in zip(names, raw):
        assert_allclose(as_dict[name], value, atol=1e-6, rtol=1e-6, err_msg=name)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(as_dict["logits"])))


@pytest.mark.parametrize("head_cls,kwargs,names,image_level", HEADS,
                         ids=[h[0].__name__ for h in HEADS])
def test_head_config_round_trip(head_cls, kwargs, names, image_level):
    head = head_cls(NUM_CLASSES, in_levels=head_cls.default_in_levels, loss_weights=0.5,
                    name="my_head", **kwargs)
    config = head.get_config()
    assert config["in_levels"] == list(head_cls.default_in_levels)
    assert config["output_names"] == list(names)
    assert config["loss_weights"] == {n: 0.5 for n in names}
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert type(restored) is head_cls and restored.get_config() == config


def test_contract_errors_are_one_clear_line():
    for value in (0, -2, 2.5, "19", True):
        with pytest.raises(ValueError, match=rf"^FCNHead: num_classes must be a positive "
                                             rf"integer, got {value!r}\.$"):
            heads.FCNHead(value)
    with pytest.raises(ValueError, match=r"in_levels must be among \['P2', 'P3', 'P4', 'P5'\], "
                                         r"got \['C5'\]"):
        heads.FCNHead(3, in_levels="C5")
    with pytest.raises(ValueError, match=r"DANetHead: has 3 output\(s\)"):
        heads.DANetHead(3, output_names="logits")
    with pytest.raises(ValueError, match=r"loss_weights must be a number or a dict with the "
                                         r"keys \['logits', 'pam', 'cam'\]"):
        heads.DANetHead(3, loss_weights={"logits": 1.0})
    with pytest.raises(ValueError, match=r"activation must be 'relu' or 'leaky_relu'"):
        heads.CCHead(3, activation="gelu")
    head = heads.FCNHead(3, in_levels="P4", channels=4)
    with pytest.raises(ValueError, match=r"reads the levels \['P4'\] but the features have only "
                                         r"\['P5'\]"):
        head({"P5": keras.ops.ones((1, 4, 4, 8))})
    with pytest.raises(ValueError, match=r"FCNHead: expected a 4-D \(B, H, W, C\) input"):
        heads.FCNHead(3)(keras.ops.ones((4, 4, 8)))


def test_auxiliary_fcn_head_is_mmsegs():
    head = heads.auxiliary_fcn_head(5)
    config = head.get_config()
    assert (config["name"], config["channels"], config["num_convs"], config["concat_input"],
            config["use_bias"], config["in_levels"], config["output_names"],
            config["loss_weights"]) == ("aux_head", 256, 1, False, False, ["P4"], ["aux"],
                                        {"aux": 0.4})
    caa = heads.auxiliary_fcn_head(5, kernel_size=1, in_level="P5", loss_weight=0.3)
    assert (caa.kernel_size, caa.in_levels, caa.loss_weights) == (1, ("P5",), {"aux": 0.3})


def test_sanet_head_without_image_output_keeps_its_variables():
    features = {"P2": keras.ops.ones((1, 8, 8, 8)), "P3": keras.ops.ones((1, 4, 4, 16)),
                "P4": keras.ops.ones((1, 4, 4, 16)), "P5": keras.ops.ones((1, 4, 4, 32))}
    with_image = heads.SANetHead(4, stage_channels=8, channels=8, name="head")
    without = heads.SANetHead(4, stage_channels=8, channels=8, image_output=False, name="head")
    assert sorted(with_image(features)) == ["image_logits", "logits"]
    assert sorted(without(features)) == ["logits"]
    assert [w.path for w in with_image.weights] == [w.path for w in without.weights]

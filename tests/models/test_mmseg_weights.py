"""Whole mmsegmentation checkpoints -> keras_segattn models (``*_v1c`` backbones).

The expected keys and outputs come from the independent torch modules in
``tests/torch_mmseg_reference.py`` (mmseg's module structure, so mmseg's state-dict keys),
never from our own mappings.
"""

import os

import keras
import numpy as np
import pytest

from keras_segattn import convert, models
from keras_segattn.layers.normalization import ImageNormalization
from keras_segattn.models import mmseg_weights
from keras_segattn.testing import TestCase

BACKBONE = "resnet_tiny_v1c"  # C4 128 channels, C5 256
NUM_CLASSES = 3
H, W = 30, 47  # even and odd sides (PyTorch padding differs from "same" on even sizes)


def _reference():
    pytest.importorskip("torch")
    import torch_mmseg_reference

    return torch_mmseg_reference


def _torch_backbone(ref):
    return ref.ResNetV1c("block", (1, 1, 2, 2), base_channels=8, stem_channels=16,
                         **ref.d8_config(8))


def _images(seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (1, H, W, 3)).astype("float32")


def _normalized(images):
    # mmseg's data preprocessor (RGB mean/std) = our "normalize" layer.
    return keras.ops.convert_to_numpy(ImageNormalization()(images))


# model name -> (keras model builder, torch EncoderDecoder builder)
CASES = {
    "danet": (
        lambda: models.DANet(NUM_CLASSES, backbone=BACKBONE, aux_channels=16),
        lambda ref: ref.EncoderDecoder(
            _torch_backbone(ref), ref.DAHead(256, 64, 8, NUM_CLASSES),
            ref.FCNHead(128, 16, NUM_CLASSES, num_convs=1, concat_input=False)),
    ),
    "fcn": (
        lambda: models.FCN(NUM_CLASSES, backbone=BACKBONE, channels=16, aux_channels=16),
        lambda ref: ref.EncoderDecoder(
            _torch_backbone(ref), ref.FCNHead(256, 16, NUM_CLASSES),
            ref.FCNHead(128, 16, NUM_CLASSES, num_convs=1, concat_input=False)),
    ),
    "nonlocal": (
        lambda: models.NonLocalNet(NUM_CLASSES, backbone=BACKBONE, channels=16,
                                   aux_channels=16),
        lambda ref: ref.EncoderDecoder(
            _torch_backbone(ref), ref.NLHead(256, 16, NUM_CLASSES),
            ref.FCNHead(128, 16, NUM_CLASSES, num_convs=1, concat_input=False)),
    ),
    # mmseg CCHead uses `channels` for convs and conv_cat: ours inter (C5 // 4) == channels.
    "ccnet": (
        lambda: models.CCNet(NUM_CLASSES, backbone=BACKBONE, channels=64, activation="relu",
                             aux_head=False),
        lambda ref: ref.EncoderDecoder(_torch_backbone(ref), ref.CCHead(256, 64, NUM_CLASSES)),
    ),
    # mmseg's ISAHead layout (down factor (3, 4) on the 4 x 6 feature map: padding on both
    # axes, several groups in both stages) with its bias-free auxiliary FCNHead.
    "isanet": (
        lambda: models.ISANet(NUM_CLASSES, backbone=BACKBONE, channels=16, key_channels=8,
                              value_channels=16, down_factor=(3, 4), dropout=0.1,
                              activation="relu", aux_channels=16, layout="mmseg",
                              aux_use_bias=False),
        lambda ref: ref.EncoderDecoder(
            _torch_backbone(ref), ref.ISAHead(256, 16, 8, NUM_CLASSES, down_factor=(3, 4)),
            ref.FCNHead(128, 16, NUM_CLASSES, num_convs=1, concat_input=False)),
    ),
    # mmseg's CCNet with its (bias-free, ReLU) auxiliary FCNHead.
    "ccnet_aux": (
        lambda: models.CCNet(NUM_CLASSES, backbone=BACKBONE, channels=64, activation="relu",
                             aux_channels=16, aux_use_bias=False),
        lambda ref: ref.EncoderDecoder(
            _torch_backbone(ref), ref.CCHead(256, 64, NUM_CLASSES),
            ref.FCNHead(128, 16, NUM_CLASSES, num_convs=1, concat_input=False)),
    ),
}


class TestMMSegCheckpoints(TestCase):
    @pytest.mark.parametrize("name", sorted(CASES))
    def test_matches_mmseg_reference(self, name):
        # Exact key set of the mmseg model, then full-model logits (every output, resized to
        # the input like mmseg's inference) against the torch reference in eval mode.
        ref = _reference()
        build_model, build_reference = CASES[name]
        reference = ref.randomize(build_reference(ref), seed=3)
        state = ref.state_dict_numpy(reference)
        model = build_model()
        assert sorted(model.reference_weight_mapping()) == sorted(state)
        assert sorted(mmseg_weights.reference_weight_mapping(model, "mmseg")) == sorted(state)
        convert.load_reference_weights(model, state)
        images = _images()
        expected = ref.run_nchw(reference, _normalized(images))
        outputs = model(images, training=False)
        assert sorted(outputs) == sorted(expected)
        for key, want in expected.items():
            self.assertAllClose(outputs[key], want, atol=1e-4, rtol=1e-4, msg=f"{name} {key}")

    def test_round_trip_through_checkpoint_file(self, tmp_path):
        # Export to an mmseg-keyed state dict, save it like an mmseg checkpoint (top-level
        # "meta" + "state_dict"), load by path into a fresh model: identical predictions.
        torch = pytest.importorskip("torch")
        model = models.DANet(NUM_CLASSES, backbone=BACKBONE, aux_channels=16)
        rng = np.random.default_rng(0)
        for weight in model.weights:  # non-trivial values everywhere (gammas are 0 at init)
            value = rng.uniform(0.5, 1.5, weight.shape) if "variance" in weight.path else \
                rng.normal(0, 0.1, weight.shape)
            weight.assign(value.astype(weight.dtype))
        state = mmseg_weights.to_reference_state_dict(model)
        assert state["decode_head.pam.gamma.scale"].shape == ()  # mmcv Scale: 0-d
        assert state["backbone.stem.0.weight"].shape == (8, 3, 3, 3)  # torch layout
        path = os.path.join(tmp_path, "danet_mmseg.pth")
        torch.save({"meta": {"CLASSES": ("a", "b", "c"), "PALETTE": [[0, 0, 0]] * 3,
                             "iter": 40000, "mmseg_version": "0.x"},
                    "state_dict": {k: torch.from_numpy(v) for k, v in state.items()},
                    "optimizer": {"state": {}, "param_groups": []}}, path)
        fresh = models.DANet(NUM_CLASSES, backbone=BACKBONE, aux_channels=16)
        convert.load_reference_weights(fresh, path)
        for a, b in zip(model.weights, fresh.weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                          keras.ops.convert_to_numpy(b), err_msg=a.path)
        images = _images(1)
        self.assertAllClose(fresh.predict(images, verbose=0), model.predict(images, verbose=0),
                            atol=0, rtol=0)

    def test_errors(self):
        tiny_kwargs = dict(backbone=BACKBONE)
        with pytest.raises(ValueError, match="_v1c"):
            models.FCN(NUM_CLASSES, backbone="resnet_tiny", channels=8,
                       aux_channels=8).reference_weight_mapping()
        danet = models.DANet(NUM_CLASSES, aux_head=False, **tiny_kwargs)
        with pytest.raises(ValueError, match="unknown source"):
            danet.reference_weight_mapping(source="official")
        assert not any(k.startswith("auxiliary_head.") for k in danet.reference_weight_mapping())
        with pytest.raises(ValueError, match="activation='relu'"):
            models.CCNet(NUM_CLASSES, channels=64, aux_head=False,
                         **tiny_kwargs).reference_weight_mapping()
        with pytest.raises(ValueError, match="aux_head=False"):
            models.CCNet(NUM_CLASSES, channels=64, activation="relu", aux_channels=8,
                         **tiny_kwargs).reference_weight_mapping()
        isa = dict(channels=16, key_channels=8, aux_head=False, **tiny_kwargs)
        with pytest.raises(ValueError, match="this head has layout='official'"):
            models.ISANet(NUM_CLASSES, value_channels=16, **isa).reference_weight_mapping()
        with pytest.raises(ValueError, match="mmsegmentation heads use ReLU"):
            models.ISANet(NUM_CLASSES, value_channels=16, layout="mmseg",
                          **isa).reference_weight_mapping()
        with pytest.raises(ValueError, match="value_channels=8; build it with value_channels=16"):
            models.ISANet(NUM_CLASSES, value_channels=8, layout="mmseg", activation="relu",
                          **isa).reference_weight_mapping()
        with pytest.raises(ValueError, match="aux_use_bias=False"):
            models.ISANet(NUM_CLASSES, channels=16, key_channels=8, value_channels=16,
                          layout="mmseg", activation="relu", aux_channels=8,
                          **tiny_kwargs).reference_weight_mapping()
        with pytest.raises(ValueError, match="layout must be one of"):
            models.ISANet(NUM_CLASSES, layout="openseg", **tiny_kwargs)
        with pytest.raises(ValueError, match="no mmsegmentation counterpart"):
            models.EANet(NUM_CLASSES, aux_head=False, **tiny_kwargs).reference_weight_mapping()
        # A wrong checkpoint is rejected key by key, nothing assigned.
        with pytest.raises(ValueError, match="missing keys: .*backbone.stem.0.weight"):
            convert.load_reference_weights(danet, {})

    @pytest.mark.large
    @pytest.mark.parametrize("depth,blocks,params", [
        (50, (3, 4, 6, 3), 49_846_574), (101, (3, 4, 23, 3), 68_838_702)])
    def test_full_size_danet_matches_mmseg(self, depth, blocks, params):
        # mmseg danet_r{50,101}-d8 with 19 classes: same keys, shapes and trainable count
        # (the count in README.md / mmseg's config); count_params() adds BN statistics.
        ref = _reference()
        import torch

        with torch.device("meta"):
            reference = ref.EncoderDecoder(
                ref.ResNetV1c("block", blocks, **ref.d8_config(8)),
                ref.DAHead(2048, 512, 64, 19),
                ref.FCNHead(1024, 256, 19, num_convs=1, concat_input=False))
        assert sum(p.numel() for p in reference.parameters()) == params
        model = models.DANet(num_classes=19, backbone=f"resnet{depth}_v1c")
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == params
        state = reference.state_dict()
        mapping = model.reference_weight_mapping()
        assert sorted(mapping) == sorted(k for k in state if "num_batches" not in k)
        for key, (variable, layout) in mapping.items():
            shape = tuple(state[key].shape)
            shape = shape[2:] + shape[1::-1] if layout == "conv" else shape
            assert int(np.prod(variable.shape)) == int(np.prod(shape)), key
            if layout == "conv":
                assert tuple(variable.shape) == shape, key

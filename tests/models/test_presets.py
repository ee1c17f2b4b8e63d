"""Presets: the mmseg checkpoint table, download -> verify -> convert -> cache, safe reading.

Expected values come from outside our code: the table's numbers are checked against values
copied from mmsegmentation 1.2.2's ``configs/*/metafile.yaml`` and against rules stated in its
configs; converted weights are checked against the independent torch modules of
``tests/torch_mmseg_reference.py`` (mmseg's module structure, so mmseg's state-dict keys).

The end-to-end tests serve checkpoints from a local HTTP server on 127.0.0.1. They are built
from the torch reference with each preset's head options and key layout, on the tiny
``ResNetV1c`` (``resnet_tiny_v1c``: same key names as ResNet-50/101 with fewer blocks and
channels) instead of the full backbone, so a test takes seconds; the full-size layouts are
checked separately (key names and shapes against the torch reference on the ``meta`` device,
parameter counts against mmseg's).
"""

import collections
import functools
import hashlib
import http.server
import io
import json
import os
import pickle
import re
import shutil
import socket
import sys
import threading
import types
import warnings

import keras
import numpy as np
import pytest

from keras_segattn import convert, models
from keras_segattn.data import dataset_info
from keras_segattn.layers.normalization import ImageNormalization
from keras_segattn.models import mmseg_presets, presets
from keras_segattn.testing import TestCase

TINY = "resnet_tiny_v1c"  # C4 128 channels, C5 256
H, W = 30, 47

# Checkpoints per model and dataset in mmseg 1.2.2's metafile.yaml files on ResNetV1c-D8
# (FCN Cityscapes: R-18/50/101 at 512x1024 and 769x769, 40k/80k, + the R-101 AMP one).
EXPECTED_COUNTS = {
    ("FCN", "cityscapes"): 11, ("FCN", "ade20k"): 4, ("FCN", "voc_aug"): 4,
    ("FCN", "pascal_context"): 2,
    ("NonLocalNet", "cityscapes"): 8, ("NonLocalNet", "ade20k"): 4, ("NonLocalNet", "voc_aug"): 4,
    ("DANet", "cityscapes"): 8, ("DANet", "ade20k"): 4, ("DANet", "voc_aug"): 4,
    ("CCNet", "cityscapes"): 8, ("CCNet", "ade20k"): 4, ("CCNet", "voc_aug"): 4,
    ("ISANet", "cityscapes"): 8, ("ISANet", "ade20k"): 4, ("ISANet", "voc_aug"): 4,
}
# A few rows copied from mmseg 1.2.2's metafile.yaml: (mIoU, mIoU(ms+flip), hash in the URL).
METAFILE_ROWS = {
    "danet_resnet101_cityscapes_512x1024_40k": (80.52, None, "c57a7157"),
    "ccnet_resnet50_cityscapes_769x769_80k": (79.29, 81.08, "73eed8ca"),
    "nonlocal_resnet101_ade20k_512x512_160k": (44.63, 45.79, "7881aa1a"),
    "fcn_resnet101_pascal_context_480x480_80k": (49.35, 51.38, "9a6f2c94"),
    "fcn_resnet101_cityscapes_512x1024_80k_fp16": (76.8, None, "fb13e883"),
    "isanet_resnet101_voc_aug_512x512_20k": (78.46, 79.16, "3ccbf355"),
}
TOKENS = {"FCN": "fcn", "NonLocalNet": "nonlocal", "DANet": "danet", "CCNet": "ccnet",
          "ISANet": "isanet"}
MMSEG_DATASET = {"cityscapes": "cityscapes", "ade20k": "ade20k", "voc_aug": "voc12aug",
                 "pascal_context": "pascal-context-59"}
TEST_SCALE = {"cityscapes": (2048, 1024), "ade20k": (2048, 512), "voc_aug": (2048, 512),
              "pascal_context": (520, 520)}


def _reference():
    pytest.importorskip("torch")
    import torch_mmseg_reference

    return torch_mmseg_reference


def _backbone_spec(depth):
    """``(block, stage blocks, C4, C5)`` of mmseg's ResNetV1c; ``depth=None``: the tiny one."""
    return {None: ("block", (1, 1, 2, 2), 128, 256), 18: ("basic_block", (2, 2, 2, 2), 256, 512),
            50: ("block", (3, 4, 6, 3), 1024, 2048),
            101: ("block", (3, 4, 23, 3), 1024, 2048)}[depth]


def _torch_model(ref, entry, depth=None):
    """mmseg's EncoderDecoder for a preset (``depth=None``: on the tiny ResNetV1c)."""
    block, stages, c4, c5 = _backbone_spec(depth)
    small = {} if depth else dict(base_channels=8, stem_channels=16)
    backbone = ref.ResNetV1c(block, stages, **small, **ref.d8_config(8))
    options, classes = entry["options"], entry["options"]["num_classes"]
    head = {
        "FCN": lambda: ref.FCNHead(c5, options.get("channels"), classes),
        "NonLocalNet": lambda: ref.NLHead(c5, options.get("channels"), classes),
        "DANet": lambda: ref.DAHead(c5, options.get("inter_channels"), 64, classes),
        "CCNet": lambda: ref.CCHead(c5, options.get("channels"), classes),
        "ISANet": lambda: ref.ISAHead(c5, options["channels"], options["key_channels"], classes,
                                      tuple(options["down_factor"])),
    }[entry["model"]]()
    aux = ref.FCNHead(c4, options["aux_channels"], classes, num_convs=1, concat_input=False)
    return ref.EncoderDecoder(backbone, head, aux)


def _tiny_entry(name):
    entry = dict(presets.PRESETS[presets._resolve(name)])
    entry["options"] = {**entry["options"], "backbone": TINY}
    return entry


def _images(seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (1, H, W, 3)).astype("float32")


def _torch_logits(ref, module, images, align_corners):
    import torch
    import torch.nn.functional as F

    x = keras.ops.convert_to_numpy(ImageNormalization()(images))
    with torch.no_grad():
        outputs = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), resize=False)
        return {k: F.interpolate(v, size=(H, W), mode="bilinear",
                                 align_corners=align_corners).numpy().transpose(0, 2, 3, 1)
                for k, v in outputs.items()}


def _expected_shapes(state, mapping):
    """``{key: (torch shape converted to the Keras layout)}`` for the mapped keys."""
    shapes = {}
    for key, (_, layout) in mapping.items():
        shape = tuple(state[key].shape)
        if layout == "conv":
            shape = shape[2:] + (shape[1], shape[0])
        elif layout == "linear":
            shape = shape[::-1]
        shapes[key] = shape
    return shapes


def _assert_layout(model, state):
    """The model's mmseg mapping covers exactly the reference's keys, with fitting shapes."""
    mapping = model.reference_weight_mapping()
    keys = sorted(k for k in state if not k.endswith("num_batches_tracked"))
    assert sorted(mapping) == keys
    for key, shape in _expected_shapes(state, mapping).items():
        variable = mapping[key][0]
        assert int(np.prod(variable.shape)) == int(np.prod(shape)), key
        if len(shape) > 1:
            assert tuple(variable.shape) == shape, key


# ------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------
class TestPresetTable:
    def test_counts_per_model_and_dataset(self):
        counts = collections.Counter((e["model"], e["dataset"]) for e in presets.PRESETS.values())
        assert dict(counts) == EXPECTED_COUNTS
        assert len(presets.PRESETS) == 85

    def test_rows_match_mmseg_metafile(self):
        for name, (miou, miou_ms_flip, digest) in METAFILE_ROWS.items():
            entry = presets.PRESETS[name]
            assert (entry["miou"], entry["miou_ms_flip"], entry["sha256_prefix"]) == (
                miou, miou_ms_flip, digest), name
            assert entry["url"].endswith(f"-{digest}.pth")

    @pytest.mark.parametrize("name", sorted(mmseg_presets.PRESETS))
    def test_entry_is_well_formed_and_consistent(self, name):
        entry = presets.PRESETS[name]
        assert set(entry) - {"requires", "notes"} == {
            "model", "options", "dataset", "crop_size", "iterations", "batch_size",
            "evaluation", "miou", "miou_ms_flip", "params", "mmseg_config", "url",
            "sha256_prefix"}
        options, dataset = entry["options"], entry["dataset"]
        depth = int(re.fullmatch(r"resnet(18|50|101)_v1c", options["backbone"]).group(1))
        crop = "x".join(map(str, entry["crop_size"]))
        amp = name.endswith("_fp16")
        # The name, the mmseg config name and the URL all state the same facts.
        assert name == (f"{TOKENS[entry['model']]}_resnet{depth}_{dataset}_{crop}_"
                        f"{entry['iterations'] // 1000}k" + ("_fp16" if amp else ""))
        batch = "4xb2" if dataset == "cityscapes" else "4xb4"
        assert entry["batch_size"] == (8 if dataset == "cityscapes" else 16)
        collection = {"NonLocalNet": "nonlocal_net"}.get(entry["model"], TOKENS[entry["model"]])
        assert entry["mmseg_config"] == (
            f"configs/{collection}/{TOKENS[entry['model']]}_r{depth}-d8_{batch}-"
            f"{'amp-' if amp else ''}{entry['iterations'] // 1000}k_{MMSEG_DATASET[dataset]}-"
            f"{crop}.py")
        stem = (f"{TOKENS[entry['model']]}_r{depth}-d8{'_fp16' if amp else ''}_{crop}_"
                f"{entry['iterations'] // 1000}k_{MMSEG_DATASET[dataset].replace('-', '_')}")
        match = re.fullmatch(
            r"https://download\.openmmlab\.com/mmsegmentation/v0\.5/(\w+)/([\w-]+)/"
            r"([\w-]+)_(\d{8})_(\d{6})-([0-9a-f]{8})\.pth", entry["url"])
        assert match, entry["url"]
        assert match.groups()[:3] == (collection, stem, stem)
        assert match.group(6) == entry["sha256_prefix"]
        # Model, classes and protocol follow mmseg's configs.
        assert options["num_classes"] == dataset_info(dataset).num_classes
        assert options["align_corners"] == (crop == "769x769")
        evaluation = dict(entry["evaluation"])
        assert tuple(evaluation.pop("scale")) == (
            (2049, 1025) if crop == "769x769" else TEST_SCALE[dataset])
        if crop == "769x769" or dataset == "pascal_context":
            stride = {"769x769": (513, 513), "480x480": (320, 320)}[crop]
            assert evaluation == {"mode": "slide", "crop_size": entry["crop_size"],
                                  "stride": stride}
        else:
            assert evaluation == {"mode": "whole"}
        assert 0 < entry["miou"] < 100
        assert entry["miou_ms_flip"] is None or 0 < entry["miou_ms_flip"] < 100
        assert isinstance(entry["params"], int) and entry["params"] > 10_000_000
        assert "requires" not in entry  # every checkpoint of the table ports today

    def test_names_urls_and_hashes_are_unique(self):
        entries = list(presets.PRESETS.values())
        for field in ("url", "sha256_prefix", "mmseg_config"):
            values = [e[field] for e in entries]
            assert len(set(values)) == len(values), field
        assert not set(presets.DEFAULTS) & set(presets.PRESETS)

    def test_defaults_are_the_best_standard_checkpoint(self):
        # One default per model, depth and dataset: best single-scale mIoU at the standard
        # crop (Cityscapes 512x1024), fp32 recipe, longer schedule on a tie.
        groups = collections.defaultdict(list)
        for name, entry in presets.PRESETS.items():
            if name.endswith("_fp16") or entry["crop_size"] == (769, 769):
                continue
            depth = entry["options"]["backbone"].split("_")[0]
            groups[f"{TOKENS[entry['model']]}_{depth}_{entry['dataset']}"].append(name)
        expected = {
            alias: max(names, key=lambda n: (presets.PRESETS[n]["miou"],
                                             presets.PRESETS[n]["iterations"]))
            for alias, names in groups.items()}
        assert presets.DEFAULTS == expected
        assert presets.DEFAULTS["danet_resnet101_cityscapes"] == (
            "danet_resnet101_cityscapes_512x1024_40k")

    def test_list_presets(self):
        assert len(models.list_presets()) == 85 + 32
        assert models.list_presets("DANet", "ade20k", variants=False) == [
            "danet_resnet101_ade20k", "danet_resnet50_ade20k"]
        assert models.list_presets(models.CCNet, "voc_aug") == [
            "ccnet_resnet101_voc_aug", "ccnet_resnet101_voc_aug_512x512_20k",
            "ccnet_resnet101_voc_aug_512x512_40k", "ccnet_resnet50_voc_aug",
            "ccnet_resnet50_voc_aug_512x512_20k", "ccnet_resnet50_voc_aug_512x512_40k"]
        assert models.list_presets(dataset="pascal_context", variants=False) == [
            "fcn_resnet101_pascal_context"]
        assert models.list_presets("eanet") == []

    def test_unknown_name_lists_close_matches(self):
        with pytest.raises(ValueError) as info:
            models.from_preset("danet_resnet101_cityscape")
        message = str(info.value)
        assert message.startswith("Unknown preset 'danet_resnet101_cityscape'. Did you mean "
                                  "'danet_resnet101_cityscapes'")
        assert "keras_segattn.models.list_presets()" in message
        with pytest.raises(ValueError, match="Unknown preset 'xyz'. keras_segattn"):
            models.preset_info("xyz")
        with pytest.raises(TypeError, match="must be a name or a directory"):
            models.from_preset(3)

    def test_preset_info(self):
        info = models.preset_info("danet_resnet101_cityscapes")
        assert info["name"] == "danet_resnet101_cityscapes_512x1024_40k"
        assert info["class_names"][:3] == ["road", "sidewalk", "building"]
        assert info["palette"][0] == [128, 64, 128]
        assert info["ms_flip_scales"] == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
        info["options"]["num_classes"] = 0  # a copy: the table is unchanged
        assert presets.PRESETS[info["name"]]["options"]["num_classes"] == 19
        ade = models.preset_info("ccnet_resnet50_ade20k")
        assert len(ade["class_names"]) == len(ade["palette"]) == 150


# ------------------------------------------------------------------------------------------
# Architectures, built offline without weights
# ------------------------------------------------------------------------------------------
# The options that may differ between presets of one head configuration.
_PER_CHECKPOINT = ("backbone", "num_classes", "align_corners")


def _head_groups():
    """Presets grouped by model and head options (everything but ``_PER_CHECKPOINT``)."""
    groups = collections.defaultdict(list)
    for name, entry in presets.PRESETS.items():
        head = {k: v for k, v in entry["options"].items() if k not in _PER_CHECKPOINT}
        groups[(entry["model"], json.dumps(head, sort_keys=True))].append(name)
    return groups


class TestArchitectures(TestCase):
    def test_every_preset_builds_on_the_tiny_backbone(self):
        # The presets' options differ only in backbone depth, num_classes and align_corners
        # within each of the 6 head configurations (FCN, FCN on ResNet-18, NonLocalNet,
        # DANet, CCNet, ISANet); each configuration is built once on the tiny ResNetV1c with
        # the options of one of its presets, every other preset's options are checked to be
        # valid values of the three per-checkpoint options, and the mmseg key layout of every
        # portable configuration equals the torch reference's, shape by shape.
        ref = _reference()
        groups = _head_groups()
        assert len(groups) == 6
        for (model_name, _), names in groups.items():
            for name in names:
                options = presets.PRESETS[name]["options"]
                assert options["backbone"] in ("resnet18_v1c", "resnet50_v1c", "resnet101_v1c")
                assert options["num_classes"] in (19, 21, 59, 150)
                assert isinstance(options["align_corners"], bool)
            entry = _tiny_entry(names[-1])
            model = models.get(model_name, **entry["options"])
            assert model.num_classes == entry["options"]["num_classes"]
            assert model.get_layer("logits").align_corners == entry["options"]["align_corners"]
            _assert_layout(model, _torch_model(ref, entry).state_dict())

    @pytest.mark.parametrize("name", [
        "fcn_resnet18_cityscapes", "nonlocal_resnet50_ade20k", "danet_resnet101_cityscapes",
        "ccnet_resnet50_voc_aug", "isanet_resnet50_voc_aug"])
    def test_full_size_layout_and_parameter_count(self, name):
        # One full-size build per model family (ResNet-18/50/101; 19/150/21 classes; FCN's
        # head is the same code at every depth and as every auxiliary head): every mmseg key with
        # its full shape (torch reference on the meta device), and the trainable parameter
        # count of the model that mmseg's registry builds (the table's ``params``).
        ref = _reference()
        import torch

        entry = presets.PRESETS[presets._resolve(name)]
        depth = int(entry["options"]["backbone"][len("resnet"):-len("_v1c")])
        with torch.device("meta"):
            reference = _torch_model(ref, entry, depth)
        assert sum(p.numel() for p in reference.parameters()) == entry["params"]
        model = models.from_preset(name, load_weights=False)
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == entry["params"]
        _assert_layout(model, reference.state_dict())

    @pytest.mark.large
    def test_every_full_size_architecture(self):
        # Every distinct full-size architecture of the table, parameter counts against mmseg's.
        seen = set()
        for name, entry in presets.PRESETS.items():
            key = json.dumps(dict(entry["options"], align_corners=None), sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            model = models.from_preset(name, load_weights=False)
            count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
            assert count == entry["params"], name
            model.reference_weight_mapping()


# ------------------------------------------------------------------------------------------
# Reading checkpoints without running their code
# ------------------------------------------------------------------------------------------
@pytest.fixture
def fake_modules(monkeypatch):
    """Install stand-in modules (``mmengine.logging.history_buffer`` ...) for pickling."""

    def install(name, **attributes):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            monkeypatch.setitem(sys.modules, ".".join(parts[:i]),
                                types.ModuleType(".".join(parts[:i])))
        module = sys.modules[name]
        for key, value in attributes.items():  # pickle finds them by module and qualname
            value.__module__, value.__qualname__ = name, key
            for member in vars(value).values() if isinstance(value, type) else ():
                if isinstance(member, types.FunctionType):
                    member.__module__ = name
                    member.__qualname__ = f"{key}.{member.__name__}"
            setattr(module, key, value)
        return module

    return install


def _history_buffer_class():
    class HistoryBuffer:  # mmengine.logging.HistoryBuffer's pickled state, as in mmengine
        def __init__(self, values):
            self._log_history = np.asarray(values, np.float64)
            self._count_history = np.ones(len(values), np.int64)
            self.max_length = 1000000
            self.statistics_methods = {"mean": HistoryBuffer.mean, "max": HistoryBuffer.max}

        def mean(self):
            return self._log_history.mean()

        def max(self):
            return self._log_history.max()

    return HistoryBuffer


class TestReadCheckpoint:
    def _state(self):
        torch = pytest.importorskip("torch")
        generator = torch.Generator().manual_seed(0)
        return collections.OrderedDict(
            [("backbone.stem.0.weight", torch.randn(4, 3, 3, 3, generator=generator)),
             ("decode_head.conv_seg.bias", torch.randn(5, generator=generator)),
             ("decode_head.bn.num_batches_tracked", torch.tensor(7))])

    def test_mmengine_runner_checkpoint(self, tmp_path, fake_modules):
        # An mmseg 1.x checkpoint as mmengine's runner writes it: message_hub with
        # HistoryBuffer objects (their statistics_methods pickle as builtins.getattr), NumPy
        # arrays and scalars in meta and message_hub.
        torch = pytest.importorskip("torch")
        history_buffer = _history_buffer_class()
        fake_modules("mmengine.logging.history_buffer", HistoryBuffer=history_buffer)
        state = self._state()
        checkpoint = {
            "meta": {"epoch": 0, "iter": np.int64(80000), "seed": np.int64(42),
                     "dataset_meta": {"classes": ("a", "b"), "palette": [[0, 0, 0], [1, 2, 3]]},
                     "cfg": "model = dict(type='EncoderDecoder')", "mmengine_version": "0.10.7"},
            "state_dict": state,
            "message_hub": {
                "log_scalars": collections.OrderedDict(
                    [("train/loss", history_buffer([0.5, 0.25])),
                     ("train/lr", history_buffer([0.01]))]),
                "runtime_info": collections.OrderedDict(
                    [("iter", 80000), ("loss_scale", np.float64(512.0)),
                     ("dataset_meta", {"classes": ("a", "b")})]),
                "resumed_keys": collections.OrderedDict([("iter", True)])},
            "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(3)}},
                          "param_groups": [{"lr": 1e-4, "momentum": 0.9, "params": [0]}]},
            "param_schedulers": [{"eta_min": 1e-4, "power": 0.9, "last_step": 80000}],
        }
        path = str(tmp_path / "iter_80000.pth")
        torch.save(checkpoint, path)
        for name in ("mmengine.logging.history_buffer", "mmengine.logging", "mmengine"):
            del sys.modules[name]  # reading must not need (or import) mmengine
        # The failure this reader exists for:
        with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
            torch.load(path, weights_only=True)
        weights = convert.read_weights_file(path)
        assert list(weights) == list(state)
        for key, value in state.items():
            assert torch.equal(weights[key], value), key
        loaded = convert.read_checkpoint(path)
        buffer = loaded["message_hub"]["log_scalars"]["train/loss"]
        assert isinstance(buffer, convert.CheckpointPlaceholder)
        assert buffer.pickled_name == "mmengine.logging.history_buffer.HistoryBuffer"
        assert buffer.state["max_length"] == 1000000
        assert isinstance(loaded["meta"]["iter"], convert.CheckpointPlaceholder)
        assert loaded["meta"]["dataset_meta"]["classes"] == ("a", "b")
        assert "mmengine" not in sys.modules

    def test_mmseg_0x_legacy_checkpoint(self, tmp_path):
        # mmseg 0.x (the published v0.5 files): torch's legacy format, meta with CLASSES.
        torch = pytest.importorskip("torch")
        state = self._state()
        path = str(tmp_path / "legacy.pth")
        torch.save({"meta": {"CLASSES": ("a", "b"), "PALETTE": [[0, 0, 0], [1, 2, 3]],
                             "mmseg_version": "0.5.0+b72a6d0", "iter": 40000},
                    "state_dict": state}, path, _use_new_zipfile_serialization=False)
        weights = convert.read_weights_file(path)
        assert sorted(weights) == sorted(state)
        assert convert.read_checkpoint(path)["meta"]["CLASSES"] == ("a", "b")

    def test_unknown_globals_are_refused_without_running_them(self, tmp_path, fake_modules):
        torch = pytest.importorskip("torch")
        calls = []

        def record(text):
            calls.append(text)

        class Payload:
            def __reduce__(self):
                return (record, ("ran",))

        fake_modules("totally.unexpected", record=record, Payload=Payload)
        path = str(tmp_path / "evil.pth")
        torch.save({"state_dict": self._state(), "meta": {"hook": Payload()}}, path)
        with pytest.raises(ValueError) as info:
            convert.read_weights_file(path)
        message = str(info.value)
        assert message.startswith(f"read_checkpoint: refusing to read {path!r}: it holds an "
                                  "object of type 'totally.unexpected.record'")
        assert "weights_only=False" in message and "\n" not in message
        assert calls == []

        marker = tmp_path / "marker"

        class System:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        torch.save({"state_dict": self._state(), "x": System()}, path)
        with pytest.raises(ValueError, match=r"an object of type '(posix|nt)\.system'"):
            convert.read_weights_file(path)
        assert not marker.exists()

    def test_damaged_files(self, tmp_path):
        torch = pytest.importorskip("torch")
        page = tmp_path / "page.pth"
        page.write_bytes(b"<html><body>Rate limit exceeded</body></html>")
        with pytest.raises(ValueError, match="is not a PyTorch checkpoint .*Unsupported operand"):
            convert.read_weights_file(page)
        buffer = io.BytesIO()
        torch.save({"state_dict": self._state()}, buffer)
        cut = tmp_path / "cut.pth"
        cut.write_bytes(buffer.getvalue()[:200])
        with pytest.raises(ValueError, match="is not a readable PyTorch checkpoint"):
            convert.read_weights_file(cut)
        odd = tmp_path / "odd.pth"
        torch.save({"state_dict": {"a.weight": torch.zeros(2), "note": "text"}}, odd)
        with pytest.raises(ValueError, match=r"entries that are not arrays: \['note'\]"):
            convert.read_weights_file(odd)
        torch.save([torch.zeros(2)], odd)
        with pytest.raises(ValueError, match="holds a list, not a state dict"):
            convert.read_weights_file(odd)


# ------------------------------------------------------------------------------------------
# Download -> verify -> convert -> cache, against a local HTTP server
# ------------------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        server = self.server
        name = self.path.lstrip("/")
        server.requests.append(name)
        path = os.path.join(server.root, name)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as file:
            data = file.read()
        mode = server.modes.get(name, "complete")
        self.send_response(200)
        if mode != "no_length":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        # "truncate" / "no_length": the server closes the connection mid-body.
        self.wfile.write(data if mode == "complete" else data[: len(data) // 2])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.root, httpd.requests, httpd.modes = str(root), [], {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = lambda name: f"http://127.0.0.1:{httpd.server_address[1]}/{name}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _publish(ref, name, server, monkeypatch, seed=0):
    """Serve an mmseg-0.x-style checkpoint of preset ``name`` (tiny backbone) and point the
    table entry at it. Returns (torch reference module, entry, checkpoint path)."""
    import torch

    full_name = presets._resolve(name)
    entry = _tiny_entry(full_name)
    reference = ref.randomize(_torch_model(ref, entry), seed=seed)
    info = presets.preset_info(full_name)
    buffer = io.BytesIO()
    torch.save({"meta": {"CLASSES": tuple(info["class_names"]), "PALETTE": info["palette"],
                         "mmseg_version": "0.5.0"},
                "state_dict": reference.state_dict()}, buffer,
               _use_new_zipfile_serialization=False)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
    filename = entry["url"].rsplit("/", 1)[1].rsplit("-", 1)[0] + f"-{digest}.pth"
    path = os.path.join(server.root, filename)
    with open(path, "wb") as file:
        file.write(buffer.getvalue())
    entry.update(url=server.url(filename), sha256_prefix=digest)
    monkeypatch.setitem(presets.PRESETS, full_name, entry)
    return reference, entry, path


def _no_network_no_torch(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a cached preset must load without downloading or reading torch")

    monkeypatch.setattr(keras.utils, "get_file", refuse)
    monkeypatch.setattr(convert, "read_checkpoint", refuse)


class TestFromPreset(TestCase):
    @pytest.mark.parametrize("name", [
        "fcn_resnet50_cityscapes",                # a default name, whole-image protocol
        "danet_resnet50_cityscapes_769x769_80k",  # align_corners=True, four outputs
        "isanet_resnet50_ade20k",                 # mmseg's ISAHead layout, 150 classes
    ])
    def test_download_convert_cache(self, name, server, tmp_path, monkeypatch):
        ref = _reference()
        reference, entry, checkpoint = _publish(ref, name, server, monkeypatch)
        cache = tmp_path / "cache"
        model = models.from_preset(name, cache_dir=cache)
        images = _images()
        expected = _torch_logits(ref, reference, images, entry["options"]["align_corners"])
        outputs = model(images, training=False)
        assert sorted(outputs) == sorted(expected)
        for key, want in expected.items():
            self.assertAllClose(outputs[key], want, atol=1e-4, rtol=1e-4, msg=key)
        # One download, kept under its published name; one preset directory.
        full_name = presets._resolve(name)
        filename = os.path.basename(checkpoint)
        assert server.requests == [filename]
        assert os.listdir(cache / "checkpoints") == [filename]
        assert presets.checkpoint_path(name, cache) == str(cache / "checkpoints" / filename)
        preset_dir = cache / "presets" / full_name
        assert sorted(os.listdir(cache / "presets")) == [full_name]
        assert sorted(os.listdir(preset_dir)) == ["config.json", "metadata.json",
                                                   "model.weights.h5"]
        metadata = models.preset_info(str(preset_dir))
        assert metadata["preset"] == full_name
        assert metadata["source"]["sha256"] == presets.sha256_of_file(checkpoint)
        assert metadata["class_names"] == list(dataset_info(entry["dataset"]).class_names)
        assert metadata["model"] == entry["model"]
        assert metadata["evaluation"]["mode"] == entry["evaluation"]["mode"]
        # Second load: from the cache only (no download, no torch), same predictions.
        _no_network_no_torch(monkeypatch)
        again = models.from_preset(name, cache_dir=cache)
        self.assertAllClose(again(images)["logits"], outputs["logits"], atol=0, rtol=0)
        assert server.requests == [filename]

    def test_hash_mismatch_deletes_the_download(self, server, tmp_path, monkeypatch):
        ref = _reference()
        _, entry, checkpoint = _publish(ref, "fcn_resnet50_cityscapes", server, monkeypatch)
        actual = presets.sha256_of_file(checkpoint)
        entry["sha256_prefix"] = "0badc0de"
        cache = tmp_path / "cache"
        with pytest.raises(ValueError) as info:
            models.from_preset("fcn_resnet50_cityscapes", cache_dir=cache)
        message = str(info.value)
        path = str(cache / "checkpoints" / os.path.basename(checkpoint))
        assert f"has SHA-256 {actual}, but the published hash starts with 0badc0de" in message
        assert "has been deleted" in message and os.path.basename(checkpoint) in message
        assert os.listdir(cache / "checkpoints") == [] and not os.path.exists(path)
        assert os.listdir(cache / "presets") == []

    @pytest.mark.parametrize("mode", ["truncate", "no_length"])
    def test_interrupted_transfer_leaves_nothing(self, mode, server, tmp_path, monkeypatch):
        # "truncate": the server announces the length, sends half and closes: the transfer
        # fails. "no_length": no Content-Length, so the short file looks complete to the
        # client: the hash check catches it. Either way nothing is kept, and the next call
        # downloads again and succeeds.
        ref = _reference()
        _, entry, checkpoint = _publish(ref, "fcn_resnet18_cityscapes", server, monkeypatch)
        filename = os.path.basename(checkpoint)
        server.modes[filename] = mode
        cache = tmp_path / "cache"
        error = ConnectionError if mode == "truncate" else ValueError
        with pytest.raises(error) as info:
            models.from_preset("fcn_resnet18_cityscapes", cache_dir=cache)
        if mode == "truncate":
            assert "retrieval incomplete" in str(info.value)
        assert os.listdir(cache / "checkpoints") == []
        server.modes[filename] = "complete"
        model = models.from_preset("fcn_resnet18_cityscapes", cache_dir=cache)
        assert model.num_classes == 19
        assert server.requests == [filename, filename]
        assert os.listdir(cache / "checkpoints") == [filename]

    def test_no_network_names_url_and_manual_path(self, server, tmp_path, monkeypatch):
        ref = _reference()
        reference, entry, checkpoint = _publish(ref, "ccnet_resnet50_cityscapes", server,
                                                monkeypatch)
        filename = os.path.basename(checkpoint)
        entry["url"] = f"http://127.0.0.1:{_closed_port()}/{filename}"
        cache = tmp_path / "cache"
        with pytest.raises(ConnectionError) as info:
            models.from_preset("ccnet_resnet50_cityscapes", cache_dir=cache)
        message = str(info.value)
        manual = presets.checkpoint_path("ccnet_resnet50_cityscapes", cache)
        assert "\n" not in message
        assert message.startswith("Could not download the checkpoint of preset "
                                  f"'ccnet_resnet50_cityscapes_512x1024_80k' from {entry['url']}")
        assert f"save it as {manual}: from_preset picks it up from there" in message
        assert os.listdir(cache / "checkpoints") == []
        # A wrong manual copy is rejected (and removed); the right one is picked up.
        with open(manual, "wb") as file:
            file.write(b"not the checkpoint")
        with pytest.raises(ValueError, match="but the published hash starts with"):
            models.from_preset("ccnet_resnet50_cityscapes", cache_dir=cache)
        assert not os.path.exists(manual)
        shutil.copy(checkpoint, manual)
        model = models.from_preset("ccnet_resnet50_cityscapes", cache_dir=cache)
        images = _images(1)
        expected = _torch_logits(ref, reference, images, False)
        outputs = model(images, training=False)
        for key, want in expected.items():
            self.assertAllClose(outputs[key], want, atol=1e-4, rtol=1e-4, msg=key)
        assert server.requests == []

    def test_outdated_conversion_is_redone(self, server, tmp_path, monkeypatch, capsys):
        ref = _reference()
        _publish(ref, "fcn_resnet18_cityscapes", server, monkeypatch)
        cache = tmp_path / "cache"
        models.from_preset("fcn_resnet18_cityscapes", cache_dir=cache)
        full_name = presets._resolve("fcn_resnet18_cityscapes")
        metadata_path = cache / "presets" / full_name / "metadata.json"
        metadata = json.loads(metadata_path.read_text())
        metadata["preset_format"] = presets.PRESET_FORMAT - 1
        metadata_path.write_text(json.dumps(metadata))
        capsys.readouterr()
        models.from_preset("fcn_resnet18_cityscapes", cache_dir=cache)
        assert "Converting" in capsys.readouterr().out
        assert len(server.requests) == 1  # converted again from the cached checkpoint
        assert json.loads(metadata_path.read_text())["preset_format"] == presets.PRESET_FORMAT

    def test_class_checks_and_presets_not_loadable_yet(self, tmp_path, monkeypatch):
        # Checked before anything is downloaded (no server here).
        with pytest.raises(ValueError, match="is a DANet, not a CCNet"):
            models.from_preset("danet_resnet101_cityscapes", expected_class=models.CCNet,
                               cache_dir=tmp_path)
        # An entry may be listed before it ports ("requires": why); none is today.
        full_name = presets._resolve("isanet_resnet50_cityscapes")
        monkeypatch.setitem(presets.PRESETS, full_name,
                            dict(presets.PRESETS[full_name], requires="a future layout"))
        with pytest.raises(ValueError, match="cannot be loaded yet: porting it needs a future "
                                             "layout"):
            models.from_preset("isanet_resnet50_cityscapes", cache_dir=tmp_path)
        model = models.from_preset("isanet_resnet50_cityscapes", load_weights=False,
                                   backbone=TINY)
        assert isinstance(model, models.ISANet) and model.num_classes == 19
        assert not os.path.exists(tmp_path / "checkpoints")


class TestSaveToPreset(TestCase):
    def _model(self):
        model = models.FCN(3, backbone=TINY, channels=8, aux_channels=8)
        rng = np.random.default_rng(0)
        for weight in model.weights:
            weight.assign(rng.uniform(0.5, 1.0, weight.shape).astype(weight.dtype))
        return model

    def test_round_trip(self, tmp_path):
        model = self._model()
        directory = str(tmp_path / "mine")
        models.save_to_preset(model, directory, class_names=["sky", "road", "car"],
                              palette=[[0, 0, 255], [128, 64, 128], [0, 0, 142]],
                              dataset="my_streets")
        assert sorted(os.listdir(directory)) == ["config.json", "metadata.json",
                                                  "model.weights.h5"]
        loaded = models.from_preset(directory)
        assert isinstance(loaded, models.FCN)
        images = _images(2)
        expected = model(images)["logits"]
        self.assertAllClose(loaded(images)["logits"], expected, atol=0, rtol=0)
        metadata = models.preset_info(directory)
        assert metadata["class_names"] == ["sky", "road", "car"]
        assert metadata["palette"][2] == [0, 0, 142]
        assert metadata["dataset"] == "my_streets"
        assert metadata["model"] == "FCN" and metadata["num_classes"] == 3
        assert metadata["parameter_count"] == model.count_params()
        assert metadata["keras_version"] == keras.__version__
        # Constructor overrides; a class check; the architecture without weights.
        fixed = models.from_preset(directory, input_shape=(H, W, 3))
        assert tuple(fixed.input_shape) == (None, H, W, 3)
        self.assertAllClose(fixed(images)["logits"], expected, atol=0, rtol=0)
        with pytest.raises(ValueError, match="is a FCN, not a DANet"):
            models.from_preset(directory, expected_class=models.DANet)
        with pytest.raises(ValueError, match="do not fit the model built from config.json "
                                             "with {'channels': 16}"):
            models.from_preset(directory, channels=16)

    def test_other_num_classes_keeps_every_weight_but_the_classifiers(self, tmp_path):
        """Fine-tuning on another label set (KerasHub's from_preset(..., num_classes=K)):
        before, the weights 'did not fit' and nothing loaded."""
        model = self._model()
        directory = str(tmp_path / "mine")
        models.save_to_preset(model, directory)
        with pytest.warns(UserWarning) as caught:
            tuned = models.FCN.from_preset(directory, num_classes=5)
        assert isinstance(tuned, models.FCN) and tuned.num_classes == 5
        classifiers = ["aux_head/conv_seg/kernel", "aux_head/conv_seg/bias",
                       "head/conv_seg/kernel", "head/conv_seg/bias"]
        assert str(caught[0].message) == (
            f"from_preset({directory!r}, num_classes=5): the preset has 3 classes; 4 weights "
            f"shaped by the classes are newly initialised ({', '.join(classifiers)}), every "
            "other weight is the preset's. Train the model before using it.")
        for saved, new in zip(model.weights, tuned.weights, strict=True):
            assert saved.path == new.path
            if new.path in classifiers:
                assert new.shape[-1] == 5  # initialised: the saved weights are >= 0.5
                assert keras.ops.convert_to_numpy(new).min() < 0.5, new.path
            else:
                self.assertAllClose(new, saved, atol=0, rtol=0)
        images = _images(2)
        assert tuple(tuned.predict(images, verbose=0).shape) == (1, H, W, 5)
        # The preset's own number of classes loads as saved, without a warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            same = models.from_preset(directory, num_classes=3)
        self.assertAllClose(same(images)["logits"], model(images)["logits"], atol=0, rtol=0)

    def test_class_methods(self, tmp_path):
        model = self._model()
        directory = str(tmp_path / "mine")
        model.save_to_preset(directory, class_names=["sky", "road", "car"])
        images = _images(1)
        loaded = models.FCN.from_preset(directory)
        assert type(loaded) is models.FCN
        self.assertAllClose(loaded(images)["logits"], model(images)["logits"], atol=0, rtol=0)
        assert type(models.Segmenter.from_preset(directory)) is models.FCN
        with pytest.raises(ValueError, match="is a FCN, not a DANet"):
            models.DANet.from_preset(directory)
        with pytest.raises(ValueError, match="is a DANet, not a CCNet"):
            models.CCNet.from_preset("danet_resnet101_cityscapes", cache_dir=tmp_path)
        assert models.DANet.presets() == models.list_presets(model="DANet")
        assert "danet_resnet101_cityscapes" in models.DANet.presets()
        assert not any(name.startswith("fcn") for name in models.DANet.presets())
        assert len(models.Segmenter.presets()) == len(models.list_presets())

    def test_errors(self, tmp_path):
        model = self._model()
        with pytest.raises(ValueError, match="2 class_names for a model with num_classes=3"):
            models.save_to_preset(model, tmp_path / "a", class_names=["x", "y"])
        with pytest.raises(ValueError, match=r"palette must be \(num_classes, 3\) integers"):
            models.save_to_preset(model, tmp_path / "a", palette=[[0, 0, 300]] * 3)
        with pytest.raises(TypeError, match="metadata must be JSON-serializable"):
            models.save_to_preset(model, tmp_path / "a", extra=object())
        with pytest.raises(TypeError, match="expected a keras.Model"):
            models.save_to_preset("model", tmp_path / "a")
        with pytest.raises(FileNotFoundError, match="no preset directory at"):
            models.from_preset(str(tmp_path / "missing"))
        (tmp_path / "half").mkdir()
        (tmp_path / "half" / "config.json").write_text("{}")
        with pytest.raises(FileNotFoundError, match="model.weights.h5 is missing"):
            models.from_preset(str(tmp_path / "half"))
        models.save_to_preset(model, tmp_path / "cut")
        weights = tmp_path / "cut" / "model.weights.h5"
        weights.write_bytes(weights.read_bytes()[:2000])
        with pytest.raises(ValueError) as info:
            models.from_preset(str(tmp_path / "cut"))
        message = str(info.value)
        assert message.startswith(f"{str(weights)!r} is not a readable weights file (")
        assert message.endswith("); save the preset again (a built-in preset: delete its "
                                "cached directory to convert it again).")
        assert len(message.splitlines()) == 1


# ------------------------------------------------------------------------------------------
# The real checkpoints (network)
# ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _reachable(host="download.openmmlab.com"):
    try:
        socket.create_connection((host, 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.large
@pytest.mark.parametrize("name", sorted(mmseg_presets.PRESETS))
def test_real_checkpoint(name, tmp_path_factory):
    # Downloads (about 50-280 MB each) into $KERAS_SEGATTN_CACHE (or a temporary directory),
    # verifies the hash, converts, and checks the checkpoint's own class names and palette
    # (mmseg 0.x meta) against the preset's.
    if not _reachable():
        pytest.skip("download.openmmlab.com is not reachable")
    cache = os.environ.get(presets.CACHE_ENV) or tmp_path_factory.mktemp("presets")
    model = models.from_preset(name, cache_dir=cache)
    info = models.preset_info(name)
    meta = convert.read_checkpoint(presets.checkpoint_path(name, cache)).get("meta", {})
    if "CLASSES" in meta:
        assert list(meta["CLASSES"]) == info["class_names"]
    if "PALETTE" in meta:
        assert np.asarray(meta["PALETTE"]).tolist() == info["palette"]
    logits = model.predict(np.zeros((1, 64, 96, 3), "float32"), verbose=0)
    assert logits.shape == (1, 64, 96, info["options"]["num_classes"])
    assert np.isfinite(logits).all()


def test_docstring_examples():
    import doctest

    import keras_segattn

    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(presets, "presets"):
        test.globs = {"keras_segattn": keras_segattn, **vars(presets)}
        runner.run(test, clear_globs=True)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted >= 3

"""``get_backbone``: the backbone names, their ImageNet weights, and backbones passed in.

Names (``BACKBONE_NAMES``; the README's backbone table gives parameters and input scaling):

============================  =================================================  ============
name                          layout (class)                                     ImageNet
============================  =================================================  ============
``resnet{18,34,50,101,152}``  KerasHub ResNet V1 (``DilatedKerasHubResNetBackbone``)  all
``resnet{...}_vd``            KerasHub ResNet-vd, deep stem + avg-pool shortcut   all
``resnet{...}_v2``            KerasHub ResNet V2, pre-activation                  50, 101
``resnet{...}_v1c``           mmseg ResNetV1c (``DilatedResNetV1cBackbone``)      18, 50, 101
``resnet{...}_kerascv``,      KerasCV 0.9 V1 / V2 layouts (``DilatedResNetBackbone`` /  50
``resnet{...}_v2_kerascv``    ``DilatedResNetV2Backbone``): the old ``resnet{d}``
``resnet_tiny``,              small KerasCV-layout V1 / V2 and V1c networks       --
``resnet_tiny_v2``,           for tests and CPU demos
``resnet_tiny_v1c``
============================  =================================================  ============

``IMAGENET_WEIGHTS`` says where ``weights="imagenet"`` comes from for each name: a KerasHub
preset (``resnet_101_imagenet``; ``hf://timm/resnet34.a1_in1k`` for ResNet-34, which KerasHub
has no built-in preset for), mmcv's model zoo for ``_v1c`` (``open-mmlab://resnet101_v1c``), or
a KerasCV preset (``_kerascv``; needs ``pip install keras-cv``).

Until this release ``resnet18`` ... ``resnet152`` (and ``_v2``) were KerasCV's layouts, which
have ImageNet weights at depth 50 only. They are KerasHub's now (the stride on the 3x3 conv,
PyTorch padding), so ImageNet weights exist at every depth. Models saved before keep loading
unchanged (their configs name the KerasCV-layout classes); rebuild such a model from its
constructor with ``backbone="resnet50_kerascv"`` to load a ``.weights.h5`` file saved from it.
"""

import difflib
import json
import os

import keras

from keras_segattn import convert
from keras_segattn.backbones import pyramid, weights
from keras_segattn.backbones.adapters import adapt_backbone
from keras_segattn.backbones.dilation import validate_multi_grid, validate_output_stride
from keras_segattn.backbones.kerascv_resnet import DilatedResNetBackbone, DilatedResNetV2Backbone
from keras_segattn.backbones.kerashub_resnet import DilatedKerasHubResNetBackbone, layout_of
from keras_segattn.backbones.resnet_v1c import DilatedResNetV1cBackbone
from keras_segattn.backbones.weights import WeightsNotAvailableError

_DEPTHS = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}
_FILTERS = [64, 128, 256, 512]
_STRIDES = [1, 2, 2, 2]


def _kerashub(block, blocks, variant):
    vd = variant == "vd"
    return ("kerashub", {
        "input_conv_filters": [32, 32, 64] if vd else [64],
        "input_conv_kernel_sizes": [3, 3, 3] if vd else [7],
        "stackwise_num_filters": list(_FILTERS),
        "stackwise_num_blocks": list(blocks),
        "stackwise_num_strides": list(_STRIDES),
        "block_type": f"{block}_block" + ("_vd" if vd else ""),
        "use_pre_activation": variant == "v2",
    })


def _kerascv(version, block_type, blocks, filters=_FILTERS):
    return (f"kerascv_v{version}", {
        "stackwise_filters": list(filters), "stackwise_blocks": list(blocks),
        "stackwise_strides": list(_STRIDES), "block_type": block_type,
    })


def _v1c(block_type, blocks, filters=_FILTERS, stem_channels=64):
    return ("v1c", {
        "stackwise_filters": list(filters), "stackwise_blocks": list(blocks),
        "stackwise_strides": list(_STRIDES), "block_type": block_type,
        "stem_channels": stem_channels,
    })


BACKBONE_SPECS = {}
for _depth, (_block, _blocks) in _DEPTHS.items():
    BACKBONE_SPECS[f"resnet{_depth}"] = _kerashub(_block, _blocks, "v1")
    BACKBONE_SPECS[f"resnet{_depth}_vd"] = _kerashub(_block, _blocks, "vd")
    BACKBONE_SPECS[f"resnet{_depth}_v2"] = _kerashub(_block, _blocks, "v2")
for _depth, (_block, _blocks) in _DEPTHS.items():
    _type = "block" if _block == "bottleneck" else "basic_block"
    BACKBONE_SPECS[f"resnet{_depth}_v1c"] = _v1c(_type, _blocks)
    BACKBONE_SPECS[f"resnet{_depth}_kerascv"] = _kerascv(1, _type, _blocks)
    BACKBONE_SPECS[f"resnet{_depth}_v2_kerascv"] = _kerascv(2, _type, _blocks)
# Tiny configurations for tests and CPU demos (KerasCV layouts, as before the KerasHub ones).
# Bottleneck blocks: KerasCV's basic-block stage 1 has an identity shortcut on the 64-channel
# stem, so it cannot be narrower than 64 channels. V2 needs 2 blocks per stage: KerasCV's V2
# stack names its block 1 twice when blocks == 1.
BACKBONE_SPECS["resnet_tiny"] = _kerascv(1, "block", [1, 1, 1, 1], [8, 16, 32, 64])
BACKBONE_SPECS["resnet_tiny_v2"] = _kerascv(2, "block", [2, 2, 2, 2], [8, 16, 32, 64])
# V1c: 2 blocks in stages 3/4 so that contract_dilation (first block at half the rate) shows.
BACKBONE_SPECS["resnet_tiny_v1c"] = _v1c("block", [1, 1, 2, 2], [8, 16, 32, 64], 16)

BACKBONE_NAMES = tuple(BACKBONE_SPECS)

_MMCV_ZOO = "https://download.openmmlab.com/pretrain/third_party/"
IMAGENET_WEIGHTS = {
    "resnet18": "resnet_18_imagenet",
    "resnet34": "hf://timm/resnet34.a1_in1k",
    "resnet50": "resnet_50_imagenet",
    "resnet101": "resnet_101_imagenet",
    "resnet152": "resnet_152_imagenet",
    "resnet50_v2": "resnet_v2_50_imagenet",
    "resnet101_v2": "resnet_v2_101_imagenet",
    "resnet18_vd": "resnet_vd_18_imagenet",
    "resnet34_vd": "resnet_vd_34_imagenet",
    "resnet50_vd": "resnet_vd_50_imagenet",
    "resnet101_vd": "resnet_vd_101_imagenet",
    "resnet152_vd": "resnet_vd_152_imagenet",
    # mmcv's open-mmlab://resnet{18,50,101}_v1c (mmcv/model_zoo/open_mmlab.json).
    "resnet18_v1c": _MMCV_ZOO + "resnet18_v1c-b5776b93.pth",
    "resnet50_v1c": _MMCV_ZOO + "resnet50_v1c-2cccc1ad.pth",
    "resnet101_v1c": _MMCV_ZOO + "resnet101_v1c-e67eebb6.pth",
    # KerasCV 0.9 presets (need keras-cv).
    "resnet50_kerascv": "resnet50_imagenet",
    "resnet50_v2_kerascv": "resnet50_v2_imagenet",
}
# Kept for code written against the previous API.
IMAGENET_PRESETS = IMAGENET_WEIGHTS


# ---------------------------------------------------------------------------------------------
# Building one family
# ---------------------------------------------------------------------------------------------
def _build(family, spec, output_stride, multi_grid, input_shape, input_normalization, name):
    if family == "kerashub":
        return DilatedKerasHubResNetBackbone(
            **spec, output_stride=output_stride, multi_grid=multi_grid,
            input_normalization=input_normalization, image_shape=tuple(input_shape), name=name)
    if family == "v1c":
        return DilatedResNetV1cBackbone(
            **spec, output_stride=output_stride, multi_grid=multi_grid,
            input_normalization=input_normalization, input_shape=tuple(input_shape), name=name)
    cls = DilatedResNetV2Backbone if family == "kerascv_v2" else DilatedResNetBackbone
    return cls(**spec, include_rescaling=False, output_stride=output_stride,
               multi_grid=multi_grid, input_normalization=input_normalization,
               input_shape=tuple(input_shape), name=name)


def _check_kerashub_layout(source, spec, name, where):
    _check_layout(layout_of(source, where), spec, name, where)


def _check_layout(layout, spec, name, where):
    layout = {key: layout[key] for key in spec}
    if layout != spec:
        different = {key: (layout[key], spec[key]) for key in spec if layout[key] != spec[key]}
        raise ValueError(
            f"{where} is a different ResNet than {name!r}: (preset, {name!r}) = {different}. "
            "Weights only load into the same layout and depth."
        )


def _check_kerascv_preset_config(config, family, spec, where):
    """A KerasCV preset directory's ``config.json`` against a KerasCV-layout name."""
    inner = config.get("config", {})
    registered = str(config.get("registered_name", config.get("class_name", "")))
    is_v2 = "V2" in registered
    if is_v2 != (family == "kerascv_v2"):
        raise ValueError(
            f"{where} holds a {registered!r} backbone, which does not match ResNet "
            f"{'V2' if family == 'kerascv_v2' else 'V1'}."
        )
    for key in ("stackwise_filters", "stackwise_blocks", "block_type"):
        if key in inner and inner[key] != spec[key]:
            raise ValueError(
                f"{where} was saved from a backbone with {key}={inner[key]!r}, but this backbone "
                f"has {key}={spec[key]!r}: weights only load into the same depth."
            )
    return config.get("weights") or "model.weights.h5", bool(inner.get("include_rescaling"))


def _kerascv_preset(name, preset):
    """The KerasCV 0.9 preset backbone (needs keras-cv) of a ``*_kerascv`` name."""
    try:
        import keras_cv  # optional dependency: only the *_kerascv ImageNet weights need it
    except ImportError as error:
        raise ImportError(
            f"weights='imagenet' for {name!r} are KerasCV's preset {preset!r}: "
            "pip install 'keras-segattn[kerascv]'. The KerasHub-based names "
            f"({name.replace('_kerascv', '')!r}) have ImageNet weights without KerasCV."
        ) from error
    cls = keras_cv.models.ResNetV2Backbone if "_v2" in name else keras_cv.models.ResNetBackbone
    try:
        return cls.from_preset(preset)
    except Exception as error:  # noqa: BLE001 - kagglehub/network errors of every kind
        raise WeightsNotAvailableError(
            f"Could not download the KerasCV preset {preset!r} for {name!r}: "
            f"{type(error).__name__}: {error}\nNo network access? On a machine with access run\n"
            f"    keras_cv.models.{cls.__name__}.from_preset({preset!r}).save_weights("
            f"'{name}.weights.h5')\ncopy the file here and pass weights='/path/{name}.weights.h5' "
            "with input_normalization={'mean': 0, 'std': 255} (the preset rescales x / 255)."
        ) from error


def _load_reference_checkpoint(model, path):
    """An mmseg/mmcv ResNetV1c state dict: ImageNet (no prefix, ``fc.*`` ignored) or the
    ``backbone.*`` part of a segmentor checkpoint."""
    state = convert.read_weights_file(path)
    if any(key.startswith("backbone.") for key in state):
        state = {key[len("backbone."):]: value for key, value in state.items()
                 if key.startswith("backbone.")}
    convert.load_reference_weights(model, state)


def _kerashub_preset(spec, preset, name, where):
    config_path = os.path.join(os.fspath(preset), "config.json")
    if os.path.exists(config_path):  # a local preset: check the layout before loading weights
        with open(config_path) as f:
            config = json.load(f).get("config", {})
        if all(key in config for key in spec):
            _check_layout(config, spec, name, where)
    source, normalization = weights.read_kerashub_preset(preset)
    _check_kerashub_layout(source, spec, name, where)
    return "copy", source, normalization


def _local_weights(family, spec, path, name):
    """``(kind, value, normalization)`` of a local file or directory (see ``_fetch``)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        config_path = os.path.join(path, "config.json")
        if not os.path.exists(config_path):
            weights_path = os.path.join(path, "model.weights.h5")
            if not os.path.exists(weights_path):
                raise FileNotFoundError(
                    f"Directory {path!r} has neither a config.json (a preset) nor a "
                    "model.weights.h5 file."
                )
            return "file", weights_path, None
        if family == "kerashub":
            return _kerashub_preset(spec, path, name, f"Preset directory {path!r}")
        try:
            with open(config_path) as f:
                config = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f"Unreadable preset config {config_path!r}: {error}") from error
        weights_file, rescaling = "model.weights.h5", False
        if family != "v1c":
            weights_file, rescaling = _check_kerascv_preset_config(
                config, family, spec, f"Preset directory {path!r}")
        weights_path = os.path.join(path, weights_file)
        if not os.path.exists(weights_path):
            raise FileNotFoundError(
                f"Preset directory {path!r} has no weights file {weights_file!r}."
            )
        return "file", weights_path, pyramid.UNIT_SCALING if rescaling else None
    if path.endswith((".weights.h5", ".keras")):
        return "file", path, None
    if family == "v1c" and path.endswith((".pth", ".pt", ".bin", ".npz")):
        return "reference", path, None
    raise ValueError(
        f"Backbone weights {path!r}: expected a KerasHub preset directory, a '.weights.h5' "
        "file (Keras 3 save_weights), a '.keras' file"
        + (", or an mmseg/mmcv checkpoint (.pth)." if family == "v1c" else ".")
    )


def _imagenet_source(name):
    if name not in IMAGENET_WEIGHTS:
        raise ValueError(
            f"weights='imagenet' is not available for {name!r}; names with ImageNet weights: "
            f"{', '.join(sorted(IMAGENET_WEIGHTS))}. Use weights=None (random init), a "
            "KerasHub preset, or a weights file."
        )
    return IMAGENET_WEIGHTS[name]


def _fetch(family, spec, weights_arg, name):
    """Everything about the weights that can fail or download, before the network is built.

    Returns ``(kind, value, normalization)``: ``("copy", backbone)`` -- a preset's backbone
    to copy by layer name, ``("file", path)`` -- a Keras weights file, ``("reference",
    path)`` -- an mmseg/mmcv checkpoint; ``normalization`` is what the weights imply
    (``None``: the default, ImageNet mean/std).
    """
    source = weights_arg
    if isinstance(weights_arg, str) and weights_arg.lower() == "imagenet":
        source = _imagenet_source(name)
        if family == "v1c":
            prefix = source.rsplit("-", 1)[-1][: -len(".pth")]
            return "reference", weights.download_checkpoint(source, prefix), None
        if family.startswith("kerascv"):
            preset = _kerascv_preset(name, source)
            return "copy", preset, pyramid.UNIT_SCALING if preset.include_rescaling else None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"weights must be None, 'imagenet', a KerasHub preset or a path, got "
            f"{type(weights_arg).__name__}."
        )
    if os.path.exists(os.fspath(source)):
        return _local_weights(family, spec, source, name)
    if family == "kerashub" and weights.is_remote_preset(source):
        return _kerashub_preset(spec, source, name, f"KerasHub preset {source!r}")
    raise FileNotFoundError(
        f"Backbone weights {os.fspath(source)!r}: no such file or directory"
        + (", and not a KerasHub preset name or handle" if family == "kerashub" else "")
        + ". Pass weights='imagenet', a preset, a .weights.h5 / .keras file saved from a "
        "backbone of the same depth, or weights=None."
    )


def _apply(model, kind, value, name):
    if kind == "copy":
        weights.copy_weights_by_name(value, model, f"the preset of {name!r}")
    elif kind == "file":
        weights.load_weights_file(model, value, name)
    else:
        _load_reference_checkpoint(model, value)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def get_backbone(backbone="resnet50", output_stride=8, multi_grid=None, weights=None,
                 input_shape=(None, None, 3), input_normalization=None):
    """A dilated backbone for segmentation, by name, from a config, or from an instance.

    Args:
        backbone: a name from ``BACKBONE_NAMES`` (see the module docstring and the README's
            backbone table), a ``keras.Model`` instance (``adapters.adapt_backbone``: ResNets
            are rebuilt dilated at ``output_stride`` with their weights, other pyramid
            backbones must already have that stride), or a dict from ``backbone_config``.
        output_stride: 8, 16 or 32 (OS8: stages 3/4 dilated 2/4), or ``None``: a name's
            plain stride 32, an instance as it is.
        multi_grid: optional per-block multipliers of the last stage's dilation, e.g. (1, 2, 4).
        weights: ``None`` (random init; nothing is downloaded), ``"imagenet"`` (the name's
            ``IMAGENET_WEIGHTS``), a KerasHub preset name or handle (``"resnet_101_imagenet"``,
            ``"kaggle://..."``, ``"hf://..."``) or local preset directory for the KerasHub
            layouts, a ``.weights.h5`` / ``.keras`` file saved from a backbone of the same
            class and depth, or (``_v1c``) an mmseg/mmcv ``.pth`` checkpoint.
        input_shape: input shape without batch, default ``(None, None, 3)``.
        input_normalization: ``{"mean": ..., "std": ...}`` in pixel units (or a KerasHub
            ``ImageConverter``) overriding what the weights imply: a KerasHub preset's image
            converter, ``x / 255`` for KerasCV presets, else ImageNet mean/std.

    Returns:
        A ``keras.Model`` with ``pyramid_outputs`` ``P2``..``P5``, ``output_stride`` and
        ``input_normalization`` (read with ``pyramid_outputs``/``input_normalization``).

    Raises:
        WeightsNotAvailableError: weights that need the network could not be downloaded; the
            message says what to download and where to put it.
        ValueError / TypeError / FileNotFoundError: bad names, strides, weights.

    Example:
    ```python
    backbone = get_backbone("resnet101", output_stride=8, weights="imagenet")
    backbone.input_normalization   # the preset's image converter, in pixel units
    features = keras.Model(backbone.inputs, pyramid_outputs(backbone))  # P3..P5 at stride 8
    ```
    """
    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)
    if isinstance(backbone, keras.Model):
        if weights is not None:
            raise ValueError(
                "get_backbone() keeps the weights of a backbone instance; load other weights "
                f"into it yourself or pass a backbone name (got weights={weights!r})."
            )
        return adapt_backbone(backbone, output_stride, multi_grid, input_normalization,
                              input_shape)
    if not isinstance(backbone, str):
        raise TypeError(
            f"backbone must be a name (one of {list(BACKBONE_NAMES)}) or a keras.Model "
            f"instance, got {type(backbone).__name__}."
        )
    name = backbone.lower()
    if name not in BACKBONE_SPECS:
        close = difflib.get_close_matches(name, BACKBONE_NAMES, n=3)
        raise ValueError(
            f"Unknown backbone {backbone!r}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + f". Valid names: {', '.join(BACKBONE_NAMES)}; or pass a keras.Model instance."
        )
    output_stride = 32 if output_stride is None else validate_output_stride(output_stride)
    multi_grid = validate_multi_grid(multi_grid)
    input_normalization = pyramid.check_normalization(input_normalization)
    family, spec = BACKBONE_SPECS[name]
    fetched = None if weights is None else _fetch(family, spec, weights, name)
    if input_normalization is None and fetched is not None:
        input_normalization = pyramid.check_normalization(fetched[2])
    model = _build(family, spec, output_stride, multi_grid, input_shape, input_normalization,
                   f"{name}_os{output_stride}")
    if fetched is not None:
        _apply(model, fetched[0], fetched[1], name)
    return model


def backbone_config(backbone):
    """JSON-serializable config of a backbone (``keras.saving.serialize_keras_object``).

    Pass it back to ``get_backbone`` (or ``keras.saving.deserialize_keras_object``) to rebuild
    the same architecture and input normalisation (weights not included). A name string is
    returned unchanged.
    """
    if isinstance(backbone, str):
        return backbone
    pyramid.pyramid_outputs(backbone)  # a clear error for a model without pyramid features
    return keras.saving.serialize_keras_object(backbone)


def stage_outputs(backbone):
    """``{"stage1": C2, "stage2": C3, "stage3": C4, "stage4": C5}`` symbolic stage outputs.

    The tensors belong to ``backbone``'s graph, so
    ``keras.Model(backbone.input, stage_outputs(backbone))`` is a feature extractor sharing
    the backbone's weights.
    """
    levels = pyramid.pyramid_outputs(backbone)
    return {f"stage{i}": levels[f"P{i + 1}"] for i in range(1, 5)}


def stage_channels(backbone):
    """``{"stage1": channels, ..., "stage4": channels}`` of the four stage outputs."""
    return {k: int(v.shape[-1]) for k, v in stage_outputs(backbone).items()}

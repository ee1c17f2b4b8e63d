"""Loading pretrained backbone weights: KerasHub presets, weights files, mmseg checkpoints.

Sources (``keras_segattn.backbones.get_backbone(..., weights=...)`` picks one by its form):

* **KerasHub presets** -- a built-in name (``"resnet_101_imagenet"``), a handle
  (``"kaggle://keras/resnetv1/keras/resnet_101_imagenet/3"``, ``"hf://timm/resnet34.a1_in1k"``)
  or a local preset directory (``config.json`` + ``model.weights.h5``, written by
  ``save_to_preset``). ``read_kerashub_preset`` builds the preset's own backbone with the
  public ``keras_hub.models.Backbone.from_preset`` (which downloads, reads timm/Transformers
  formats and sharded weights) and its image converter (``keras_hub.layers.ImageConverter``),
  and ``copy_weights_by_name`` copies every weighted layer into the dilated graph, which has
  the same layer names: nothing depends on layer order, and every layer must match.
* **Keras weights files** (``.weights.h5``, ``.keras``) saved from a backbone of the same
  class and depth: ``load_weights_file`` checks the file's layers and shapes first (Keras
  itself only warns on a mismatch and keeps random weights).
* **mmsegmentation / mmcv ImageNet checkpoints** of ResNetV1c (``open-mmlab://resnet50_v1c``
  ...): ``download_checkpoint`` fetches the URL once into the Keras cache and checks the
  8-hex-digit SHA-256 prefix in its file name; the backbone ports the state dict with
  ``keras_segattn.convert.load_reference_weights``.

Nothing is downloaded unless weights are asked for. Without the network a
``WeightsNotAvailableError`` says what to download and where to put it.
"""

import io
import json
import os
import re
import warnings
import zipfile

import keras
import keras_hub

from keras_segattn import convert
from keras_segattn.backbones import pyramid


class WeightsNotAvailableError(RuntimeError):
    """Pretrained weights could not be obtained (no network, no download client, no cache)."""


def is_remote_preset(weights):
    """True for a KerasHub built-in preset name or a ``scheme://`` handle."""
    return isinstance(weights, str) and (
        "://" in weights or weights in keras_hub.models.Backbone.presets
    )


# ---------------------------------------------------------------------------------------------
# KerasHub presets
# ---------------------------------------------------------------------------------------------
def _offline_help(preset):
    folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", preset.split("://")[-1]).strip("_")
    return (
        "No network access? On a machine with access run\n"
        f"    import keras_hub\n"
        f"    keras_hub.models.Backbone.from_preset({preset!r}).save_to_preset({folder!r})\n"
        f"    keras_hub.layers.ImageConverter.from_preset({preset!r}).save_to_preset({folder!r})\n"
        f"copy the directory {folder!r} here and pass its path as weights= (backbone_weights= "
        "in the models), or weights=None for random initialisation."
    )


def _read_converter(preset):
    """The preset's KerasHub image converter, or ``None`` when it has none."""
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except (FileNotFoundError, ValueError):
        converter = None
    if converter is None and os.path.isdir(preset):
        path = os.path.join(preset, "image_converter.json")
        if os.path.exists(path):  # a preset saved from a class KerasHub does not know
            with open(path) as f:
                converter = keras.saving.deserialize_keras_object(json.load(f))
    return converter


def read_kerashub_preset(preset, load_weights=True):
    """``(backbone, input_normalization)`` of a KerasHub preset.

    ``backbone`` is the preset's own KerasHub backbone (with its weights when
    ``load_weights``); ``input_normalization`` comes from the preset's image converter
    (``pyramid.normalization_from_converter``), or is ImageNet mean/std, with a warning, when
    the preset has no converter (e.g. a directory written by ``backbone.save_to_preset``
    alone).

    Raises:
        FileNotFoundError: a local directory without ``config.json``.
        WeightsNotAvailableError: a remote preset that could not be downloaded.
    """
    preset = os.fspath(preset)
    local = os.path.isdir(preset)
    if local and not os.path.exists(os.path.join(preset, "config.json")):
        raise FileNotFoundError(
            f"Preset directory {preset!r} has no config.json: write it with "
            "backbone.save_to_preset(directory) (KerasHub), or pass a .weights.h5 file."
        )
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset, load_weights=load_weights)
    except Exception as error:  # noqa: BLE001 - KerasHub reports no network as ValueError too
        if local:
            raise ValueError(
                f"Could not load the KerasHub preset directory {preset!r}: "
                f"{type(error).__name__}: {error}"
            ) from error
        raise WeightsNotAvailableError(
            f"Could not get the KerasHub preset {preset!r}: {type(error).__name__}: "
            f"{str(error)[:500]}\n" + _offline_help(preset)
        ) from error
    converter = _read_converter(preset)
    if converter is None:
        warnings.warn(
            f"KerasHub preset {preset!r} has no image converter; assuming ImageNet mean/std "
            "input normalisation. Pass input_normalization={'mean': ..., 'std': ...} if its "
            "weights expect another.", stacklevel=3,
        )
        return backbone, dict(pyramid.IMAGENET_NORMALIZATION)
    return backbone, pyramid.normalization_from_converter(converter)


# ---------------------------------------------------------------------------------------------
# Copying weights between graphs with the same layer names
# ---------------------------------------------------------------------------------------------
def copy_weights_by_name(source, target, where):
    """Copy every weighted layer of ``source`` into the layer of the same name in ``target``.

    Raises:
        ValueError: naming the layers that exist in only one of them or differ in shapes
            (nothing is copied then).
    """
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    target_layers = {layer.name: layer for layer in target.layers if layer.weights}
    missing = sorted(set(target_layers) - set(source_layers))
    extra = sorted(set(source_layers) - set(target_layers))
    shapes = sorted(
        (name, [tuple(w.shape) for w in source_layers[name].weights],
         [tuple(w.shape) for w in target_layers[name].weights])
        for name in set(source_layers) & set(target_layers)
        if [tuple(w.shape) for w in source_layers[name].weights]
        != [tuple(w.shape) for w in target_layers[name].weights]
    )
    if missing or extra or shapes:
        raise ValueError(
            f"The weights of {where} do not fit {target.name!r}: layers missing there: "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, extra layers there: "
            f"{extra[:5]}{' ...' if len(extra) > 5 else ''}, shape mismatches: {shapes[:3]}. "
            "Weights only load into the same layout and depth (dilation does not matter)."
        )
    for name, layer in target_layers.items():
        layer.set_weights(source_layers[name].get_weights())


# ---------------------------------------------------------------------------------------------
# Keras weights files
# ---------------------------------------------------------------------------------------------
def _snake_case(name):
    """Keras' h5 group name of a layer class (``BatchNormalization`` -> ``batch_normalization``)."""
    name = re.sub(r"\W+", "", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name))
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _expected_weight_groups(model):
    """``{h5 group: [variable shapes]}`` as Keras 3 ``save_weights`` names a functional model's
    layers: snake-cased class name + a per-class counter, in ``model.layers`` order."""
    groups, used = {}, {}
    for layer in model.layers:
        base = _snake_case(type(layer).__name__)
        count = used.get(base, 0)
        used[base] = count + 1
        if layer.weights:
            key = base if count == 0 else f"{base}_{count}"
            groups[key] = sorted(tuple(w.shape) for w in layer.weights)
    return groups


def _check_weights_file(model, path):
    """Keras only *warns* when a weights file does not fit the model (and keeps random weights
    for what it could not match), so compare the file's layer groups and shapes first."""
    import h5py

    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            handle = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    else:
        handle = h5py.File(path, "r")
    with handle as f:
        if "layers" not in f:
            return  # not the Keras 3 functional layout: let load_weights decide
        saved = {}
        for key, group in f["layers"].items():
            variables = group.get("vars")
            if variables is not None and len(variables):
                saved[key] = sorted(tuple(variables[k].shape) for k in variables)
    expected = _expected_weight_groups(model)
    if saved != expected:
        missing = sorted(set(expected) - set(saved))
        extra = sorted(set(saved) - set(expected))
        shapes = sorted(k for k in set(saved) & set(expected) if saved[k] != expected[k])
        raise ValueError(
            f"layers missing in the file: {missing[:5]}, extra layers in the file: {extra[:5]}, "
            f"shape mismatches: {[(k, saved[k], expected[k]) for k in shapes[:3]]}"
        )


def load_weights_file(model, path, name):
    """Load a ``.weights.h5`` / ``.keras`` file saved from a backbone of the same class and
    depth into ``model`` (any output stride), after checking that it fits."""
    path = os.fspath(path)
    try:
        _check_weights_file(model, path)
        model.load_weights(path)
    except Exception as error:
        raise ValueError(
            f"Could not load backbone weights from {path!r} into {name!r}: "
            f"{type(error).__name__}: {error}\nThe file must be saved (save_weights / "
            "save_to_preset) from a backbone of the same class, layout and depth; dilation "
            "and output stride do not matter."
        ) from error


# ---------------------------------------------------------------------------------------------
# Downloaded checkpoints (mmcv model zoo)
# ---------------------------------------------------------------------------------------------
def cache_directory():
    """Where downloaded checkpoints are kept (created if needed): ``$KERAS_HOME/keras_segattn``
    (default ``~/.keras/keras_segattn``; ``/tmp/.keras/keras_segattn`` when that cannot be
    written, as ``keras.utils.get_file`` does)."""
    base = os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))
    directory = os.path.join(base, "keras_segattn")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        directory = os.path.join("/tmp", ".keras", "keras_segattn")
        os.makedirs(directory, exist_ok=True)
    if not os.access(directory, os.W_OK):
        directory = os.path.join("/tmp", ".keras", "keras_segattn")
        os.makedirs(directory, exist_ok=True)
    return directory


def download_checkpoint(url, sha256_prefix):
    """Local path of the checkpoint at ``url``: downloaded once into ``cache_directory()``
    (``keras.utils.get_file``; an interrupted transfer leaves no file) and checked against
    ``sha256_prefix`` (the hex digits after the last ``-`` of mmcv's file names).

    Raises:
        WeightsNotAvailableError: no network; the message gives the URL and the path where a
            manually downloaded file is picked up.
        ValueError: the file's hash does not match (the file is deleted).
    """
    filename = os.path.basename(url)
    directory = cache_directory()
    path = os.path.join(directory, filename)
    if not os.path.exists(path):
        try:
            path = keras.utils.get_file(filename, url, cache_dir=os.path.dirname(directory),
                                        cache_subdir=os.path.basename(directory))
        except Exception as error:  # noqa: BLE001 - urllib/socket errors of every kind
            raise WeightsNotAvailableError(
                f"Could not download {url}: {type(error).__name__}: {error}\n"
                f"No network access? Download that file elsewhere and put it at {path} "
                "(it is picked up from there), or pass its path as weights=."
            ) from error
    actual = convert.sha256_of_file(path)
    if not actual.startswith(sha256_prefix):
        os.remove(path)
        raise ValueError(
            f"{path}: SHA-256 {actual[:len(sha256_prefix)]}... does not match the expected "
            f"prefix {sha256_prefix} of {url}; the file was deleted. Download it again."
        )
    return path

"""Pretrained models by name: ``from_preset``, ``save_to_preset``, ``list_presets``.

A **preset** is either a name from the table of published mmsegmentation checkpoints
(``keras_segattn.models.mmseg_presets``: 85 checkpoints of FCN, NonLocalNet, DANet, CCNet and
ISANet with their URL, SHA-256 prefix, options, dataset and published mIoU) or a **preset
directory** in KerasHub's layout::

    config.json          keras.saving.serialize_keras_object(model)
    model.weights.h5     model.save_weights(...)
    metadata.json        versions, parameter count, class names, palette, provenance

``from_preset(name)`` downloads the checkpoint once (``keras.utils.get_file``; the file's
SHA-256 must start with the 8 hex digits that mmseg published in the file name), converts it
with ``keras_segattn.convert.load_reference_weights`` (the file is read by
``convert.read_checkpoint``: no code from it runs) and caches the converted model as a preset
directory, so every later call is offline and reads only Keras files (no torch)::

    <cache>/checkpoints/<file name of the URL>   the verified download (or your own copy)
    <cache>/presets/<preset name>/                the converted preset directory

``<cache>`` is ``cache_dir=``, else ``$KERAS_SEGATTN_CACHE``, else
``$KERAS_HOME/keras_segattn`` (``~/.keras/keras_segattn``). Without network access, put the
checkpoint at ``checkpoint_path(name)`` (the error message names it) and it is picked up.

``save_to_preset(model, directory)`` and ``from_preset(directory)`` work for any model of the
package, e.g. your own fine-tuned one.

Example:
>>> model = keras_segattn.models.from_preset("danet_resnet101_cityscapes")  # doctest: +SKIP
>>> info = keras_segattn.models.preset_info("danet_resnet101_cityscapes")
>>> info["miou"], info["class_names"][:2]
(80.52, ['road', 'sidewalk'])
"""

import copy
import datetime
import difflib
import json
import os
import shutil
import tempfile
import uuid
import warnings

import keras
import numpy as np

from keras_segattn import convert
from keras_segattn.models import mmseg_presets
from keras_segattn.version import __version__

PRESETS = mmseg_presets.PRESETS
DEFAULTS = mmseg_presets.DEFAULTS
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
CACHE_ENV = "KERAS_SEGATTN_CACHE"
# Version of the converted layout: cached conversions with another value are redone.
PRESET_FORMAT = 1


# ----------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------
def _class_name(model):
    """``"DANet"`` for a model class, a class name or ``None``."""
    if model is None or isinstance(model, str):
        return model
    return model.__name__


def list_presets(model=None, dataset=None, variants=True):
    """Names of the built-in presets, sorted.

    Args:
        model: only presets of this model: a class (``DANet``) or a class name
            (``"danet"``, case-insensitive). ``None``: every model.
        dataset: only presets trained on this ``keras_segattn.data`` dataset
            (``"cityscapes"``, ``"ade20k"``, ``"voc_aug"``, ``"pascal_context"``).
        variants: include the full names of every checkpoint
            (``"danet_resnet101_cityscapes_769x769_80k"``); False lists only the plain
            default names (``"danet_resnet101_cityscapes"``).

    Example:
    >>> list_presets("DANet", "ade20k", variants=False)
    ['danet_resnet101_ade20k', 'danet_resnet50_ade20k']
    """
    wanted = _class_name(model)
    names = []
    for name in sorted(set(PRESETS) | set(DEFAULTS)):
        if not variants and name not in DEFAULTS:
            continue
        entry = PRESETS[DEFAULTS.get(name, name)]
        if wanted is not None and entry["model"].lower() != wanted.lower():
            continue
        if dataset is not None and entry["dataset"] != dataset:
            continue
        names.append(name)
    return names


def _resolve(name):
    """Full table name of ``name`` (a full name or a default alias)."""
    if name in PRESETS:
        return name
    if name in DEFAULTS:
        return DEFAULTS[name]
    known = sorted(set(PRESETS) | set(DEFAULTS))
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"Did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise ValueError(
        f"Unknown preset {name!r}. {hint}keras_segattn.models.list_presets() lists the "
        f"{len(known)} built-in presets; a preset directory (config.json, model.weights.h5) "
        "is accepted too."
    )


def _looks_like_path(preset):
    return os.sep in preset or "/" in preset or preset.startswith((".", "~"))


def preset_info(preset):
    """What a preset is, without downloading anything.

    For a built-in name: a copy of its table entry plus ``name`` (the full name),
    ``class_names``, ``palette`` (lists, from ``keras_segattn.data.dataset_info``) and
    ``ms_flip_scales``. For a preset directory: its ``metadata.json``.

    Raises:
        ValueError: unknown name (with close matches); FileNotFoundError: a directory
            without ``metadata.json``.
    """
    if not isinstance(preset, (str, os.PathLike)):
        raise TypeError(f"preset_info: preset must be a name or a directory, got "
                        f"{type(preset).__name__}.")
    preset = os.fspath(preset)
    if os.path.isdir(preset) or _looks_like_path(preset):
        path = os.path.join(os.path.expanduser(preset), METADATA_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"preset_info: no {METADATA_FILE} in {preset!r}.")
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    from keras_segattn.data import dataset_info

    name = _resolve(preset)
    info = copy.deepcopy(PRESETS[name])
    dataset = dataset_info(info["dataset"])
    info.update(name=name, class_names=list(dataset.class_names),
                palette=np.asarray(dataset.palette).tolist(),
                ms_flip_scales=mmseg_presets.MS_FLIP_SCALES)
    return info


PROTOCOLS = ("single_scale", "ms_flip")


def evaluation_protocol(preset, protocol="single_scale"):
    """How a preset was evaluated, as keyword arguments of
    ``keras_segattn.inference.predict_logits`` / ``keras_segattn.evaluation.evaluate``.

    ``"single_scale"`` (the table's ``miou``): ``mode`` ``"whole"`` or ``"slide"`` (with
    ``crop_size``/``stride``) after the keep-ratio resize to ``scale``. ``"ms_flip"`` (the
    table's ``miou_ms_flip``): ``mode="multiscale"`` over ``ms_flip_scales`` (relative to
    ``scale``) with horizontal flip, each scale run whole or sliding as in single-scale.

    Args:
        preset: a built-in preset name, a preset directory (its ``metadata.json`` needs an
            ``evaluation`` entry, as converted presets have), or a ``preset_info`` dict.
        protocol: ``"single_scale"`` or ``"ms_flip"``.

    Returns:
        dict with ``mode``, ``crop_size``, ``stride`` (``None`` for whole), ``scale``
        (``(long, short)``), ``scales`` and ``flip``.

    Example:
    >>> evaluation_protocol("danet_resnet50_cityscapes_769x769_40k")["crop_size"]
    (769, 769)
    >>> evaluation_protocol("danet_resnet101_ade20k", "ms_flip")["scales"]
    (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    """
    info = preset if isinstance(preset, dict) else preset_info(preset)
    if protocol not in PROTOCOLS:
        raise ValueError(f"evaluation_protocol: protocol must be one of {PROTOCOLS}, got "
                         f"{protocol!r}.")
    evaluation = info.get("evaluation")
    if not isinstance(evaluation, dict) or evaluation.get("mode") not in ("whole", "slide"):
        where = info.get("preset") or info.get("name") or "this preset"
        raise ValueError(
            f"evaluation_protocol: {where} records no evaluation protocol (metadata "
            "'evaluation': {'mode': 'whole' or 'slide', 'scale': [long, short], ...}); save it "
            "with save_to_preset(..., evaluation=...) or give the inference mode explicitly."
        )
    slide = evaluation["mode"] == "slide"
    scale = evaluation.get("scale")
    settings = {
        "mode": evaluation["mode"],
        "crop_size": tuple(evaluation["crop_size"]) if slide else None,
        "stride": tuple(evaluation["stride"]) if slide else None,
        "scale": tuple(scale) if scale is not None else None,
        "scales": (1.0,),
        "flip": False,
    }
    if protocol == "ms_flip":
        scales = info.get("ms_flip_scales") or mmseg_presets.MS_FLIP_SCALES
        settings.update(mode="multiscale", scales=tuple(float(s) for s in scales), flip=True)
    return settings


# ----------------------------------------------------------------------------------------
# Cache, download and verification
# ----------------------------------------------------------------------------------------
def cache_root(cache_dir=None):
    """The cache directory: ``cache_dir``, ``$KERAS_SEGATTN_CACHE`` or
    ``$KERAS_HOME/keras_segattn`` (``~/.keras/keras_segattn``)."""
    if cache_dir is not None:
        return os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
    if os.environ.get(CACHE_ENV):
        return os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV]))
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.abspath(os.path.join(keras_home, "keras_segattn"))


def checkpoint_path(preset, cache_dir=None):
    """Where the checkpoint of a built-in preset is (or will be) stored: put a copy that
    you downloaded yourself there and ``from_preset`` uses it (after the hash check)."""
    entry = PRESETS[_resolve(preset)]
    return os.path.join(cache_root(cache_dir), "checkpoints", entry["url"].rsplit("/", 1)[1])


def _writable_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the preset cache directory {path!r} ({error}); pass "
                      f"cache_dir= or set ${CACHE_ENV} to a writable directory.") from None
    if not os.access(path, os.W_OK):
        raise OSError(f"the preset cache directory {path!r} is not writable; pass cache_dir= "
                      f"or set ${CACHE_ENV} to a writable directory.")
    return path


sha256_of_file = convert.sha256_of_file  # (public here too: the tests and users call it)


def _verify(path, name, entry):
    """SHA-256 of ``path`` if it starts with the published prefix; else delete and raise."""
    expected = entry["sha256_prefix"]
    actual = sha256_of_file(path)
    if not actual.startswith(expected):
        os.remove(path)
        raise ValueError(
            f"Checkpoint {path!r} of preset {name!r} has SHA-256 {actual}, but the published "
            f"hash starts with {expected} (the file name in {entry['url']}). The file was "
            "corrupted or replaced in transfer and has been deleted; call from_preset again "
            "to download it again."
        )
    return actual


def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _fetch_checkpoint(name, entry, root):
    """Path and SHA-256 of the verified checkpoint: the cached/manually placed file, or a
    fresh download (into a unique temporary name, renamed only after the hash check, so an
    interrupted transfer never leaves a file under the final name)."""
    url = entry["url"]
    directory = _writable_dir(os.path.join(root, "checkpoints"))
    filename = url.rsplit("/", 1)[1]
    path = os.path.join(directory, filename)
    if os.path.isfile(path):
        return path, _verify(path, name, entry)
    partial = f".{filename}.{uuid.uuid4().hex[:12]}.partial"
    try:
        downloaded = keras.utils.get_file(fname=partial, origin=url, cache_dir=directory,
                                          cache_subdir="", force_download=True)
    except Exception as error:  # noqa: BLE001 - get_file raises a bare Exception
        _remove_quietly(os.path.join(directory, partial))
        reason = str(error).split(" -- ", 1)[-1]
        raise ConnectionError(
            f"Could not download the checkpoint of preset {name!r} from {url} ({reason}); no "
            f"partial file was kept. Without network access, download that URL by other means "
            f"and save it as {path}: from_preset picks it up from there (its SHA-256 must "
            f"start with {entry['sha256_prefix']})."
        ) from None
    except BaseException:
        _remove_quietly(os.path.join(directory, partial))
        raise
    digest = _verify(downloaded, name, entry)
    os.replace(downloaded, path)
    return path, digest


def _is_converted(preset_dir, name, entry):
    """Whether ``preset_dir`` holds this preset's conversion, current and complete."""
    try:
        with open(os.path.join(preset_dir, METADATA_FILE), encoding="utf-8") as file:
            metadata = json.load(file)
    except (OSError, ValueError):
        return False
    return (metadata.get("preset") == name
            and metadata.get("preset_format") == PRESET_FORMAT
            and str(metadata.get("source", {}).get("sha256", "")).startswith(
                entry["sha256_prefix"])
            and os.path.isfile(os.path.join(preset_dir, CONFIG_FILE))
            and os.path.isfile(os.path.join(preset_dir, WEIGHTS_FILE)))


def _convert(name, entry, checkpoint, digest, preset_dir):
    """Build the architecture, port the checkpoint, write the preset directory atomically."""
    print(f"Converting {os.path.basename(checkpoint)} to the Keras preset {preset_dir}",
          flush=True)
    model = _model_class(entry["model"])(**entry["options"])
    convert.load_reference_weights(model, checkpoint)
    parent = os.path.dirname(preset_dir)
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
    try:
        info = preset_info(name)
        save_to_preset(
            model, staging, class_names=info["class_names"], palette=info["palette"],
            preset=name, dataset=entry["dataset"], crop_size=list(entry["crop_size"]),
            evaluation=info["evaluation"], ms_flip_scales=list(info["ms_flip_scales"]),
            metrics={"miou": entry["miou"], "miou_ms_flip": entry["miou_ms_flip"]},
            source={"url": entry["url"], "sha256": digest,
                    "mmseg_config": entry["mmseg_config"], "table": mmseg_presets.SOURCE},
        )
        if os.path.isdir(preset_dir):  # an outdated or incomplete conversion
            shutil.rmtree(preset_dir)
        try:
            os.rename(staging, preset_dir)
        except OSError:  # another process finished the same conversion first
            if not _is_converted(preset_dir, name, entry):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------------------
# Loading and saving
# ----------------------------------------------------------------------------------------
def _model_class(class_name):
    """The registered model class of that name (registered when ``keras_segattn`` is
    imported)."""
    return keras.saving.get_registered_object(f"keras_segattn>{class_name}")


def _check_class(model_class, expected_class, preset):
    if expected_class is not None and not issubclass(model_class, expected_class):
        raise ValueError(
            f"Preset {preset!r} is a {model_class.__name__}, not a {expected_class.__name__}: "
            f"load it with keras_segattn.models.from_preset({preset!r}) or "
            f"{model_class.__name__}.from_preset."
        )


def _load_directory(directory, load_weights, expected_class, overrides):
    config_path = os.path.join(directory, CONFIG_FILE)
    weights_path = os.path.join(directory, WEIGHTS_FILE)
    for path in (config_path,) + ((weights_path,) if load_weights else ()):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{directory!r} is not a preset directory: {os.path.basename(path)} is missing "
                "(save one with keras_segattn.models.save_to_preset(model, directory))."
            )
    with open(config_path, encoding="utf-8") as file:
        config = json.load(file)
    registered = keras.saving.get_registered_object(str(config.get("registered_name")))
    if isinstance(registered, type):  # checked before the (slow) build
        _check_class(registered, expected_class, directory)
    preset_classes = config.get("config", {}).get("num_classes")
    new_classes = overrides.get("num_classes", preset_classes)
    if load_weights and new_classes != preset_classes:
        return _load_for_new_classes(config, overrides, weights_path, expected_class, directory)
    model = _build(config, overrides)
    _check_class(type(model), expected_class, directory)
    if load_weights:
        _load_weights(model, weights_path, overrides)
    return model


def _build(config, overrides):
    """The model of a serialized ``config`` with some constructor arguments replaced."""
    return keras.saving.deserialize_keras_object(
        dict(config, config={**config.get("config", {}), **overrides}))


def _load_weights(model, weights_path, overrides):
    try:
        model.load_weights(weights_path)
    except ValueError as error:
        raise ValueError(
            f"The weights in {weights_path!r} do not fit the model built from "
            f"{CONFIG_FILE}{f' with {overrides}' if overrides else ''}: {error}"
        ) from None
    except OSError as error:  # h5py: a truncated or damaged file
        raise ValueError(
            f"{weights_path!r} is not a readable weights file ({error}); save the preset again "
            "(a built-in preset: delete its cached directory to convert it again)."
        ) from None


def _load_for_new_classes(config, overrides, weights_path, expected_class, directory):
    """``from_preset(..., num_classes=K)`` with K other than the preset's: fine-tuning on
    another label set, as KerasHub's ``from_preset(..., num_classes=K)`` and mmseg's
    ``load_from`` with a new ``num_classes``. The preset's model is built and loaded as
    saved, then every weight whose shape does not depend on the classes is copied into the
    model built with K classes; the classifiers (the final 1x1 convolution of each head,
    and any other weight shaped by the classes) keep their initialisation, and a warning names
    them."""
    preset_overrides = {k: v for k, v in overrides.items() if k != "num_classes"}
    source = _build(config, preset_overrides)
    _check_class(type(source), expected_class, directory)
    _load_weights(source, weights_path, preset_overrides)
    model = _build(config, overrides)
    fresh = []
    for saved, new in zip(source.weights, model.weights, strict=True):
        if saved.path != new.path:  # the same architecture, so the same variables in order
            raise ValueError(f"from_preset: with num_classes={overrides['num_classes']} the "
                             f"model's variable {new.path!r} is not the preset's "
                             f"{saved.path!r}.")
        if tuple(saved.shape) == tuple(new.shape):
            new.assign(saved)
        else:
            fresh.append(new.path)
    warnings.warn(
        f"from_preset({directory!r}, num_classes={overrides['num_classes']}): the preset has "
        f"{config['config']['num_classes']} classes; {len(fresh)} weights shaped by the "
        f"classes are newly initialised ({', '.join(fresh)}), every other weight is the "
        "preset's. Train the model before using it.", stacklevel=4)
    return model


def from_preset(preset, *, load_weights=True, cache_dir=None, expected_class=None, **kwargs):
    """A model with pretrained weights, from a built-in preset name or a preset directory.

    Args:
        preset: a name from ``list_presets()`` (``"danet_resnet101_cityscapes"``) or the
            path of a directory written by ``save_to_preset``.
        load_weights: False builds the architecture only (offline, nothing downloaded).
        cache_dir: cache directory (see the module docstring).
        expected_class: a model class; the preset's model must be it or a subclass
            (``DANet.from_preset`` passes ``DANet``).
        **kwargs: constructor arguments that replace the preset's (e.g.
            ``input_shape=(1024, 2048, 3)``). ``num_classes`` other than the preset's
            gives the preset's weights with new classifiers, for fine-tuning on another
            label set (a warning names the newly initialised weights); other arguments that
            change the weights' shapes cannot be combined with ``load_weights``.

    Returns:
        The model (inference mode: call ``compile()`` before ``fit``).

    Raises:
        ValueError: unknown name (with close matches), a preset that cannot be loaded yet,
            a wrong ``expected_class``, a checkpoint whose SHA-256 does not match (the file
            is deleted) or whose weights do not fit.
        ConnectionError: the download failed; the message names the URL and the path where
            a manually downloaded copy is picked up.
    """
    if not isinstance(preset, (str, os.PathLike)):
        raise TypeError(f"from_preset: preset must be a name or a directory, got "
                        f"{type(preset).__name__}.")
    preset = os.fspath(preset)
    if os.path.isdir(preset):
        return _load_directory(preset, load_weights, expected_class, kwargs)
    if _looks_like_path(preset):
        raise FileNotFoundError(f"from_preset: no preset directory at {preset!r}.")
    name = _resolve(preset)
    entry = PRESETS[name]
    _check_class(_model_class(entry["model"]), expected_class, preset)
    if not load_weights:
        return _model_class(entry["model"])(**{**entry["options"], **kwargs})
    if "requires" in entry:
        raise ValueError(
            f"Preset {name!r} cannot be loaded yet: porting it needs {entry['requires']}. "
            "from_preset(..., load_weights=False) builds the architecture."
        )
    root = cache_root(cache_dir)
    preset_dir = os.path.join(_writable_dir(os.path.join(root, "presets")), name)
    if not _is_converted(preset_dir, name, entry):
        checkpoint, digest = _fetch_checkpoint(name, entry, root)
        _convert(name, entry, checkpoint, digest, preset_dir)
    return _load_directory(preset_dir, True, expected_class, kwargs)


def _check_metadata(model, class_names, palette, metadata):
    num_classes = getattr(model, "num_classes", None)
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if num_classes is not None and len(class_names) != num_classes:
            raise ValueError(f"save_to_preset: {len(class_names)} class_names for a model with "
                             f"num_classes={num_classes}.")
    if palette is not None:
        array = np.asarray(palette)
        if (array.ndim != 2 or array.shape[1] != 3 or not np.issubdtype(array.dtype, np.integer)
                or array.min() < 0 or array.max() > 255):
            raise ValueError(f"save_to_preset: palette must be (num_classes, 3) integers in "
                             f"[0, 255], got shape {array.shape}, dtype {array.dtype}.")
        if num_classes is not None and len(array) != num_classes:
            raise ValueError(f"save_to_preset: palette has {len(array)} colours for a model "
                             f"with num_classes={num_classes}.")
        palette = array.tolist()
    try:
        json.dumps(metadata)
    except TypeError as error:
        raise TypeError(f"save_to_preset: metadata must be JSON-serializable ({error}).") from None
    return class_names, palette


def save_to_preset(model, preset_dir, *, class_names=None, palette=None, **metadata):
    """Write ``model`` as a preset directory that ``from_preset(preset_dir)`` loads.

    Files: ``config.json`` (``keras.saving.serialize_keras_object``), ``model.weights.h5``
    (``model.save_weights``), ``metadata.json`` (written last: keras_segattn and Keras
    versions, ``preset_format``, date, model class, ``parameter_count``, ``num_classes``,
    ``class_names``, ``palette`` and ``metadata``). Existing files of these names in
    ``preset_dir`` are replaced.

    Args:
        model: a built keras_segattn model.
        preset_dir: directory (created if needed).
        class_names, palette: optional; ``num_classes`` names and ``(num_classes, 3)`` RGB
            colours (used by the command line to label and colour predictions).
        **metadata: more JSON-serializable fields (e.g. ``dataset="cityscapes"``).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"save_to_preset: expected a keras.Model, got {type(model).__name__}.")
    if not model.built:
        raise ValueError("save_to_preset: the model is not built yet.")
    class_names, palette = _check_metadata(model, class_names, palette, metadata)
    os.makedirs(preset_dir, exist_ok=True)
    with open(os.path.join(preset_dir, CONFIG_FILE), "w", encoding="utf-8") as file:
        json.dump(keras.saving.serialize_keras_object(model), file, indent=2)
    model.save_weights(os.path.join(preset_dir, WEIGHTS_FILE))
    info = {
        "keras_segattn_version": __version__,
        "keras_version": keras.__version__,
        "preset_format": PRESET_FORMAT,
        "date_saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": type(model).__name__,
        "parameter_count": int(model.count_params()),
        "num_classes": getattr(model, "num_classes", None),
        "class_names": class_names,
        "palette": palette,
        **metadata,
    }
    with open(os.path.join(preset_dir, METADATA_FILE), "w", encoding="utf-8") as file:
        json.dump(info, file, indent=2)

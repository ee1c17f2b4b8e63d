"""Porting parameters from the official (mostly PyTorch) implementations.

``load_reference_weights(layer, weights)`` loads a reference module's parameters into a
built keras_segattn layer, head or model. ``weights`` maps the reference's own parameter
names (PyTorch ``state_dict`` keys; Keras variable names for the TensorFlow CAA reference)
to arrays in the reference's layout. Each layer that can be ported implements
``reference_weight_mapping()``, returning ``{reference_key: (keras_variable, layout)}``,
built from the small helpers below; this module does the layout conversion and the checks.

Layouts:
    ``"conv"``: torch ``Conv2d.weight`` (out, in, kh, kw) -> Keras kernel (kh, kw, in, out).
    ``"linear"``: torch ``Linear.weight`` (out, in) -> Keras ``Dense`` kernel (in, out).
    ``"copy"``: same layout; only a size-preserving reshape is allowed (e.g. gamma ``(1,)``).

Reading checkpoint files (``read_weights_file`` / ``read_checkpoint``) never runs code from
the file: PyTorch checkpoints are unpickled with ``torch.load(weights_only=True)``, and the
training bookkeeping that mmengine's runner stores next to the weights (``HistoryBuffer``,
NumPy values) comes back as inert ``CheckpointPlaceholder`` objects; any other object is
refused with a message naming its type.
"""

import hashlib
import os
import re

import numpy as np

_LAYOUTS = ("conv", "linear", "copy")
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def join_key(prefix, name):
    """``join_key("conv5a", "0.weight") -> "conv5a.0.weight"``; an empty prefix adds nothing."""
    return f"{prefix}.{name}" if prefix else name


def prefixed(prefix, mapping):
    """Prefix every reference key of a sub-module's mapping with ``prefix``."""
    return {join_key(prefix, key): value for key, value in mapping.items()}


def conv_mapping(key, conv):
    """Mapping for a torch ``Conv2d`` at module path ``key`` onto a Keras ``Conv2D``."""
    mapping = {join_key(key, "weight"): (conv.kernel, "conv")}
    if conv.use_bias:
        mapping[join_key(key, "bias")] = (conv.bias, "copy")
    return mapping


def linear_mapping(key, dense):
    """Mapping for a torch ``Linear`` at ``key`` onto a Keras ``Dense``."""
    mapping = {join_key(key, "weight"): (dense.kernel, "linear")}
    if dense.use_bias:
        mapping[join_key(key, "bias")] = (dense.bias, "copy")
    return mapping


def batch_norm_mapping(key, batch_norm):
    """Mapping for a torch ``BatchNorm2d`` at ``key`` onto a Keras ``BatchNormalization``."""
    mapping = {}
    if batch_norm.scale:
        mapping[join_key(key, "weight")] = (batch_norm.gamma, "copy")
    if batch_norm.center:
        mapping[join_key(key, "bias")] = (batch_norm.beta, "copy")
    mapping[join_key(key, "running_mean")] = (batch_norm.moving_mean, "copy")
    mapping[join_key(key, "running_var")] = (batch_norm.moving_variance, "copy")
    return mapping


def _to_numpy(value):
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _convert(array, layout):
    if layout == "conv":
        if array.ndim != 4:
            raise ValueError(f"expected a 4-D conv weight (out, in, kh, kw), got shape {array.shape}")
        return array.transpose(2, 3, 1, 0)
    if layout == "linear":
        if array.ndim != 2:
            raise ValueError(f"expected a 2-D linear weight (out, in), got shape {array.shape}")
        return array.T
    return array


# Globals that training frameworks pickle into a checkpoint next to the weights: mmengine's
# runner (mmsegmentation 1.x) stores ``message_hub`` with ``HistoryBuffer`` objects (whose
# ``statistics_methods`` pickle as ``getattr(HistoryBuffer, "mean")``) and NumPy arrays and
# scalars in ``message_hub``/``meta``. ``read_checkpoint`` unpickles each of them as an inert
# ``CheckpointPlaceholder``: no code of theirs (and no NumPy code) runs on the file's data.
CHECKPOINT_BOOKKEEPING_GLOBALS = (
    "mmengine.logging.history_buffer.HistoryBuffer",
    "builtins.getattr",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
)


class CheckpointPlaceholder:
    """An object of a known bookkeeping type (``CHECKPOINT_BOOKKEEPING_GLOBALS``) read from a
    checkpoint without running its code: it keeps the pickled ``args`` and ``state`` as
    data. ``pickled_name`` is the original ``module.qualname``."""

    pickled_name = None

    def __new__(cls, *args, **kwargs):
        placeholder = super().__new__(cls)
        placeholder.args = args
        placeholder.state = None
        return placeholder

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<{self.pickled_name} placeholder>"


_PLACEHOLDERS = tuple(
    (type(name.rsplit(".", 1)[1].lstrip("_"), (CheckpointPlaceholder,), {"pickled_name": name}),
     name)
    for name in CHECKPOINT_BOOKKEEPING_GLOBALS
)


def _refused_global(message):
    """The ``module.name`` that torch's weights-only unpickler refused, if it says so."""
    found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", message)
    if found:
        return found.group(1)
    found = re.search(r"unrecognized function (.+?)(?:\n|$)", message)
    return found.group(1) if found else None


def read_checkpoint(path):
    """Unpickle a PyTorch checkpoint (``torch.save``, zip or legacy format) without running
    code from the file.

    ``torch.load(weights_only=True)`` with every name in ``CHECKPOINT_BOOKKEEPING_GLOBALS``
    mapped to an inert ``CheckpointPlaceholder``: tensors, plain containers (dict, list,
    tuple, OrderedDict, set, str, numbers) and those placeholders come back; any other class
    or function in the file is refused (``weights_only=False`` is never used, so a downloaded
    file cannot run code).

    Raises:
        ImportError: torch is not installed.
        ValueError: the file holds an object of an unexpected type (named in the message),
            or is not a PyTorch checkpoint.
    """
    path = os.fspath(path)
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading a PyTorch checkpoint needs torch: pip install 'keras-segattn[torch]'"
        ) from error
    import pickle

    try:
        with torch.serialization.safe_globals(list(_PLACEHOLDERS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _torch_reason(error)
        name = _refused_global(str(error))
        if name is None and not reason.startswith("Can only"):
            raise ValueError(
                f"read_checkpoint: {path!r} is not a PyTorch checkpoint (an HTML page or a "
                f"damaged download?): {reason}"
            ) from None
        what = f"an object of type {name!r}" if name else f"an unexpected object ({reason})"
        raise ValueError(
            f"read_checkpoint: refusing to read {path!r}: it holds {what}, which is not a "
            "tensor, a plain container or known training bookkeeping (mmengine's "
            "HistoryBuffer, NumPy values), and unpickling it could run code from the file. If "
            "you trust the file, load it yourself (torch.load(path, weights_only=False)) and "
            "pass its state dict to load_reference_weights."
        ) from None
    except (RuntimeError, EOFError) as error:
        raise ValueError(
            f"read_checkpoint: {path!r} is not a readable PyTorch checkpoint (truncated, or "
            f"another format?): {_torch_reason(error)}"
        ) from None


def _torch_reason(error):
    """The informative line of a torch.load error (its weights-only unpickler's own words)."""
    message = str(error)
    if "WeightsUnpickler error:" in message:
        message = message.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _state_dict(checkpoint, path):
    """The parameter dictionary of a loaded checkpoint: a nested ``state_dict``/``model``
    entry when present (mmseg/mmengine/torchvision conventions), else the object itself."""
    state = checkpoint
    for nested in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(nested), dict):
            state = state[nested]
    if not isinstance(state, dict):
        raise ValueError(
            f"read_weights_file: {path!r} holds a {type(state).__name__}, not a state dict "
            "(a mapping of parameter names to tensors)."
        )
    bad = sorted(k for k, v in state.items() if not hasattr(v, "shape"))
    if bad:
        raise ValueError(
            f"read_weights_file: the state dict in {path!r} has entries that are not arrays: "
            f"{bad[:5]}{' ...' if len(bad) > 5 else ''}."
        )
    return dict(state)


def read_weights_file(path):
    """Read a parameter dictionary from ``.npz`` (keys as stored, a ``param/`` prefix is
    stripped) or from a PyTorch checkpoint (``.pt``/``.pth``/``.bin``, read with
    ``read_checkpoint``: no code from the file runs; a nested ``state_dict``/``model`` entry
    is used when present)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_reference_weights: no such weights file: {path!r}")
    if path.endswith(".npz"):
        with np.load(path) as data:
            return {
                (k[len("param/"):] if k.startswith("param/") else k): data[k]
                for k in data.files
                if k.startswith("param/") or not any(f.startswith("param/") for f in data.files)
            }
    if path.endswith((".pt", ".pth", ".bin")):
        return _state_dict(read_checkpoint(path), path)
    raise ValueError(
        f"load_reference_weights: cannot read {path!r}; expected a .npz, .pt, .pth or .bin file."
    )


def load_reference_weights(layer, weights, strip_prefix=""):
    """Load a reference implementation's parameters into a built keras_segattn layer.

    Args:
        layer: a built layer/head/model that implements ``reference_weight_mapping()``.
        weights: dict ``{reference_key: array}`` (NumPy arrays or torch tensors, in the
            reference's layout), or a path to a ``.npz`` / PyTorch checkpoint.
        strip_prefix: a prefix to remove from every key first (e.g. ``"module.head."``).

    Raises:
        ValueError: naming every missing, unexpected or mis-shaped key. Nothing is
            assigned unless all keys match.

    Example:
    >>> layer = keras_segattn.layers.PositionAttention()
    >>> _ = layer(np.zeros((1, 8, 8, 64), "float32"))
    >>> load_reference_weights(layer, torch_pam_module.state_dict())  # doctest: +SKIP
    """
    if not hasattr(layer, "reference_weight_mapping"):
        raise TypeError(
            f"load_reference_weights: {type(layer).__name__} has no reference implementation "
            "to port weights from (it does not define reference_weight_mapping())."
        )
    if not layer.built:
        raise ValueError(
            f"load_reference_weights: {type(layer).__name__} {layer.name!r} is not built yet; "
            "call it once on an input of the right channel count first."
        )
    if isinstance(weights, (str, os.PathLike)):
        weights = read_weights_file(weights)
    if strip_prefix:
        weights = {
            (k[len(strip_prefix):] if k.startswith(strip_prefix) else k): v
            for k, v in weights.items()
        }
    # A layer may name reference keys it deliberately does not port (e.g. the ImageNet
    # classifier ``fc.*`` of a backbone checkpoint): ``reference_ignored_prefixes``.
    ignored = tuple(getattr(layer, "reference_ignored_prefixes", ()))
    weights = {k: v for k, v in weights.items()
               if not k.endswith(_IGNORED_SUFFIXES) and not (ignored and k.startswith(ignored))}
    mapping = layer.reference_weight_mapping()

    missing = sorted(set(mapping) - set(weights))
    unexpected = sorted(set(weights) - set(mapping))
    problems = []
    converted = {}
    for key in sorted(set(mapping) & set(weights)):
        variable, layout = mapping[key]
        if layout not in _LAYOUTS:
            raise ValueError(f"internal error: unknown layout {layout!r} for {key!r}")
        array = _to_numpy(weights[key])
        try:
            array = _convert(array, layout)
        except ValueError as error:
            problems.append(f"  {key}: {error}")
            continue
        expected = tuple(variable.shape)
        if tuple(array.shape) != expected:
            if layout == "copy" and array.size == int(np.prod(expected)):
                array = array.reshape(expected)
            else:
                problems.append(
                    f"  {key}: shape {tuple(_to_numpy(weights[key]).shape)} (reference layout) "
                    f"does not fit {variable.path} of shape {expected} (layout {layout!r})"
                )
                continue
        converted[key] = (variable, array)
    if missing or unexpected or problems:
        lines = [f"load_reference_weights: the weights do not match {type(layer).__name__}:"]
        if missing:
            lines.append("missing keys: " + ", ".join(missing))
        if unexpected:
            lines.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            lines.append("mis-shaped keys:")
            lines.extend(problems)
        raise ValueError("\n".join(lines))
    for variable, array in converted.values():
        variable.assign(array.astype(variable.dtype))
    return layer


def sha256_of_file(path):
    """Hex SHA-256 of a file, read in 1 MiB blocks (checks downloaded checkpoints against the
    hash prefix in their published file names)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

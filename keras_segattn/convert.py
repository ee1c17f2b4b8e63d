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
"""

import os

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


def read_weights_file(path):
    """Read a parameter dictionary from ``.npz`` (keys as stored, a ``param/`` prefix is
    stripped) or from a PyTorch checkpoint (``.pt``/``.pth``/``.bin``; a nested
    ``state_dict``/``model`` entry is used when present)."""
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
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                "Reading a PyTorch checkpoint needs torch: pip install 'keras-segattn[torch]'"
            ) from error
        state = torch.load(path, map_location="cpu", weights_only=True)
        for nested in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(nested), dict):
                state = state[nested]
        return dict(state)
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

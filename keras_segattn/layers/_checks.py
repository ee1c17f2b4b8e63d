"""Argument and input-shape validation shared by the attention layers.

Every helper raises a ``ValueError`` (``TypeError`` where the value is not a number at
all) whose message starts with the layer's class name, names the offending value and,
where there is one, the fix.
"""


def _owner_name(owner):
    """``owner`` is a layer instance or its class name."""
    return owner if isinstance(owner, str) else type(owner).__name__


def input_channels(layer, input_shape, for_weights=True):
    """Validate a ``(B, H, W, C)`` input shape and return ``C`` as a Python int.

    The message style of the projection layers (non-local, DANet, CCNet, efficient and
    linear attention). ``for_weights``: the layer's weights depend on ``C`` (the message
    says so).
    """
    name = type(layer).__name__
    if len(input_shape) != 4:
        raise ValueError(
            f"{name} expects a 4-D channels-last input (batch, height, width, "
            f"channels); got shape {tuple(input_shape)}. Reshape the feature map to 4-D."
        )
    if input_shape[-1] is None:
        reason = " to create its weights" if for_weights else ""
        raise ValueError(
            f"{name} needs a known channel dimension{reason}; got input shape "
            f"{tuple(input_shape)}. Give the last axis a fixed size."
        )
    return int(input_shape[-1])


def rank4_channels(owner, input_shape):
    """Validate a ``(B, H, W, C)`` input shape and return ``C`` as a Python int.

    The short message style of the block layers (FLANet, CAA, ISA, SANet).
    """
    name = _owner_name(owner)
    if len(input_shape) != 4:
        raise ValueError(f"{name}: expected a 4-D (B, H, W, C) input, got shape {input_shape}.")
    if input_shape[-1] is None:
        raise ValueError(f"{name}: the channel dimension must be known, got {input_shape}.")
    return int(input_shape[-1])


def positive_integer(owner, arg, value):
    """An integral value ``>= 1`` (``8`` or ``8.0``, not ``True``), returned as ``int``."""
    message = f"{_owner_name(owner)}: {arg} must be a positive integer, got {value!r}."
    if isinstance(value, bool):
        raise ValueError(message)
    try:
        integral = int(value)
    except TypeError:
        raise TypeError(message) from None
    except ValueError:
        raise ValueError(message) from None
    if integral != value or integral < 1:
        raise ValueError(message)
    return integral


def positive_int(owner, arg, value, minimum=1, allow_none=False):
    """A Python ``int`` (not ``bool``) ``>= minimum``, or ``None`` if ``allow_none``."""
    if allow_none and value is None:
        return value
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        if allow_none:
            expected += " or None"
        raise ValueError(f"{_owner_name(owner)}: {arg} must be {expected}, got {value!r}.")
    return value


def reduced_channels(owner, channels, reduction, what="query/key"):
    """``channels // reduction``, which must be at least 1."""
    reduced = channels // reduction
    if reduced < 1:
        raise ValueError(
            f"{_owner_name(owner)}: {channels} input channels // reduction {reduction} gives "
            f"{reduced} {what} channels; use reduction <= {channels} or more input channels."
        )
    return reduced

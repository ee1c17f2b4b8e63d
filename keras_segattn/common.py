"""Shared constants and small argument checks of keras_segattn (one home for each).

* ``IGNORE_INDEX``: the label that counts for nothing in losses and metrics (255, the
  Cityscapes / VOC / mmsegmentation convention).
* ``MAIN_OUTPUT``: the name of a model's prediction in its output dict (``"logits"``).
* ``INFERENCE_MODES``: ``keras_segattn.inference`` / ``evaluation`` modes.
* ``ACTIVATIONS``: the activations of the heads' conv blocks (``"leaky_relu"`` is slope 0.01,
  InPlaceABN's).
* ``pair``, ``check_num_classes``, ``check_activation``: argument checks whose error is one
  line naming the owner, the argument and the value; ``pair_argument``: the command line's
  ``HxW`` parser.
"""

import argparse
import numbers

IGNORE_INDEX = 255
MAIN_OUTPUT = "logits"
INFERENCE_MODES = ("whole", "slide", "multiscale")
ACTIVATIONS = ("relu", "leaky_relu")


def pair(value, name, owner=None, allow_none=True):
    """``8 -> (8, 8)``, ``(8, 4) -> (8, 4)``: a positive ``(height, width)`` pair of ints.

    Args:
        value: an int, a pair of ints, or ``None`` (returned as is when ``allow_none``).
        name: the argument's name, for the error message.
        owner: the function or class, for the error message (``"predict_logits"``).

    Raises:
        ValueError: ``"<owner>: <name> must be a positive int or a (height, width) pair,
            got <value>."``

    Example:
    >>> pair(8, "crop_size"), pair([512, 1024], "crop_size")
    ((8, 8), (512, 1024))
    """
    if value is None and allow_none:
        return None
    prefix = f"{owner}: " if owner else ""
    message = f"{prefix}{name} must be a positive int or a (height, width) pair, got {value!r}."
    if isinstance(value, bool):
        raise ValueError(message)
    if isinstance(value, numbers.Integral):
        value = (value, value)
    try:
        values = tuple(value)
    except TypeError:
        raise ValueError(message) from None
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral)
                               or v <= 0 for v in values):
        raise ValueError(message)
    return tuple(int(v) for v in values)


def check_num_classes(owner, num_classes):
    """``num_classes`` must be a positive int (``19``, not ``0``, ``-1``, ``2.5``, ``"19"`` or
    ``True``); returns it as ``int``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) \
            or num_classes < 1:
        raise ValueError(
            f"{owner}: num_classes must be a positive integer, got {num_classes!r}."
        )
    return int(num_classes)


def check_activation(owner, activation):
    """``activation`` must be one of ``ACTIVATIONS``."""
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"{owner}: activation must be 'relu' or 'leaky_relu' (slope 0.01, InPlaceABN), "
            f"got {activation!r}."
        )
    return activation


def pair_argument(text):
    """``argparse`` type of the command line's sizes: ``"512x1024"``, ``"512,1024"`` or
    ``"512"`` -> ``(height, width)`` of positive ints."""
    parts = [p for p in text.replace("x", ",").split(",") if p]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW or one integer, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected HxW or one positive integer, got {text!r}")
    return values

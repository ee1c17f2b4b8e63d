"""keras_segattn: attention-based semantic segmentation for Keras 3.

Runs on TensorFlow, JAX and PyTorch. Importing this package never touches the network.
"""

from keras_segattn._backend import check_backend_installed as _check_backend_installed

_check_backend_installed()

from keras_segattn.version import __version__  # noqa: E402

_SUBMODULES = ("layers", "convert", "common", "losses", "metrics", "recipe", "backbones", "heads",
               "models")


def _command_line_starting():
    """True while the ``keras-segattn`` command starts (its script, or ``python -m
    keras_segattn.cli``). The command imports what it runs after parsing its arguments and
    setting up logging, so ``--help`` answers without loading Keras and TensorFlow, and
    their start-up logs can be silenced; ``__getattr__`` below loads a submodule on first
    use meanwhile."""
    import os
    import sys

    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    if script in ("keras-segattn", "keras-segattn.exe", "keras-segattn-script.py"):
        return True
    argv = getattr(sys, "orig_argv", [])
    return any(a == "-m" and b in ("keras_segattn.cli", "keras_segattn.cli.__main__")
               for a, b in zip(argv, argv[1:]))


if not _command_line_starting():
    from keras_segattn import layers  # noqa: E402,F401
    from keras_segattn import convert  # noqa: E402,F401
    from keras_segattn import common, losses, metrics, recipe  # noqa: E402,F401  (registers the recipe's objects)
    from keras_segattn import backbones, heads, models  # noqa: E402,F401


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"keras_segattn.{name}")
    raise AttributeError(f"module 'keras_segattn' has no attribute {name!r}")

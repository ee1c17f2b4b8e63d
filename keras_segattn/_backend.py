"""Checks that the Keras backend the user asked for is installed, before Keras is imported.

Keras itself fails deep inside its own import with a bare ``ModuleNotFoundError`` when
``KERAS_BACKEND`` names a framework that is missing; we turn that into a message that
says which extra to install.
"""

import importlib.util
import json
import os

_BACKEND_MODULES = {
    "tensorflow": ("tensorflow", "pip install tensorflow"),
    "jax": ("jax", "pip install 'keras-segattn[jax]'"),
    "torch": ("torch", "pip install 'keras-segattn[torch]'  (CPU build; see README for GPU)"),
    "numpy": ("numpy", "pip install numpy"),
}


def requested_backend():
    """The backend Keras will use: ``KERAS_BACKEND``, else ``~/.keras/keras.json``, else TF."""
    backend = os.environ.get("KERAS_BACKEND")
    if backend:
        return backend
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    try:
        with open(os.path.join(keras_home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def check_backend_installed(backend=None):
    """Raise ``ImportError`` naming the fix when the requested backend is not importable."""
    backend = backend or requested_backend()
    if backend not in _BACKEND_MODULES:
        raise ImportError(
            f"keras_segattn: unknown Keras backend {backend!r} (from KERAS_BACKEND or "
            f"keras.json). Choose one of {sorted(k for k in _BACKEND_MODULES if k != 'numpy')}."
        )
    module, install = _BACKEND_MODULES[backend]
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"keras_segattn: the Keras backend {backend!r} was requested (KERAS_BACKEND="
            f"{os.environ.get('KERAS_BACKEND', '<unset>')!r}) but the package {module!r} is not "
            f"installed. Install it with:  {install}"
        )
    # TensorFlow is needed on every backend: KerasHub (through tensorflow-text) and the
    # tf.data pipelines import it.
    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError(
            "keras_segattn needs TensorFlow on every backend (KerasHub, which provides the "
            "backbones, and the tf.data / tensorflow-datasets pipelines import it). Install "
            "it with: pip install tensorflow"
        )

"""keras_segattn: attention-based semantic segmentation for Keras 3.

Runs on TensorFlow, JAX and PyTorch. Importing this package never touches the network.
"""

from keras_segattn._backend import check_backend_installed as _check_backend_installed

_check_backend_installed()

from keras_segattn.version import __version__  # noqa: E402
from keras_segattn import layers  # noqa: E402,F401
from keras_segattn import convert  # noqa: E402,F401
from keras_segattn import common, losses, recipe  # noqa: E402,F401  (registers the recipe's objects)
from keras_segattn import backbones, heads, models  # noqa: E402,F401

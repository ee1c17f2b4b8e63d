"""Segmentation models: ``Segmenter`` (any backbone x any head) and the named models.

``Segmenter(backbone, decode_head, auxiliary_heads=())`` is the one segmentation model; the
named models (``DANet``, ``CCNet``, ...) are recipes of backbone + heads on it, with their
papers' options. ``get(name, **kwargs)`` and ``list_models()`` build them by name.

Every model takes RGB images in [0, 255] and returns a dict of float32 logits at the input
resolution (``"logits"`` + auxiliary outputs); ``predict()`` returns only ``"logits"``.
"""

from keras_segattn.models.segmenter import Segmenter
from keras_segattn.models.base import (
    NamedSegmenter, SegmentationModel, get, list_models, register_model,
)
from keras_segattn.models.ccnet import CCNet
from keras_segattn.models.danet import DANet
from keras_segattn.models.fcn import FCN
from keras_segattn.models.isanet import ISANet
from keras_segattn.models.nonlocal_net import NonLocalNet
from keras_segattn.models.caanet import CAANet
from keras_segattn.models.eanet import EANet
from keras_segattn.models.flanet import FLANet
from keras_segattn.models.sanet import SANet
from keras_segattn.models.lanet import LANet
from keras_segattn.models.attention_to_scale import AttentionToScale
from keras_segattn.models.presets import (
    from_preset, list_presets, preset_info, save_to_preset,
)

"""Segmentation heads as Keras layers (float32 logits at feature resolution, no upsampling).

Each head implements ``reference_weight_mapping()`` for the official head's state dict.
"""

from keras_segattn.heads.cc_head import CCHead
from keras_segattn.heads.danet_head import DANetHead
from keras_segattn.heads.fcn_head import FCNHead
from keras_segattn.heads.isa_head import ISAHead, ISAModule
from keras_segattn.heads.nl_head import NLHead

# Heads defined next to their models (keras_segattn/models/<model>.py).
from keras_segattn.models.attention_to_scale import AttentionToScaleHead  # noqa: E402
from keras_segattn.models.caanet import CAAHead  # noqa: E402
from keras_segattn.models.eanet import EANetHead  # noqa: E402
from keras_segattn.models.flanet import FLANetHead, FLANetOutput  # noqa: E402
from keras_segattn.models.lanet import LANetHead  # noqa: E402
from keras_segattn.models.sanet import SANetHead  # noqa: E402

"""Segmentation heads as Keras layers (float32 logits at feature resolution, no upsampling).

Heads with an official implementation implement ``reference_weight_mapping()`` for its
weights (``keras_segattn.convert.load_reference_weights``): DANetHead, CCHead, ISAHead /
ISAModule (openseg), CAAHead (CAR / iSeg, Keras variable names), FLANetHead / FLANetOutput,
FCNHead and NLHead (mmsegmentation); whole mmseg checkpoints map onto FCN, DANet, NonLocalNet
and CCNet (``keras_segattn.models.mmseg_weights``). EANetHead and LANetHead have no official
head (the papers publish only the attention modules, whose layers map:
``layers.EfficientAttention``, ``layers.LinearPositionAttention``), and SANet and
Attention-to-Scale have no public official code (see ``../shared/docs/mechanisms.md``), so
those heads have nothing to port from; ``load_reference_weights`` says so.
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

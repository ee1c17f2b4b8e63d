"""Decode heads: every head in its own module, all on one contract (``heads.base.Head``).

A head is a ``keras.layers.Layer`` that reads the backbone levels it declares
(``in_levels``), returns named float32 logits at feature resolution (``output_names``) with
their ``loss_weights``, and maps its official weights where there are any
(``reference_weight_mapping``). ``keras_segattn.models.Segmenter`` puts any head on any
backbone; the named models are recipes of backbone + heads.

Heads with an official implementation implement ``reference_weight_mapping()`` for its
weights (``keras_segattn.convert.load_reference_weights``): DANetHead, CCHead, ISAHead /
ISAModule (openseg), CAAHead (CAR / iSeg, Keras variable names), FLANetHead / FLANetOutput,
FCNHead and NLHead (mmsegmentation); FCNHead, NLHead, DANetHead and CCHead also map
mmsegmentation's keys (``source="mmseg"``), so whole mmseg checkpoints port onto segmenters
built from them. EANetHead and LANetHead have no official head (the papers publish only the
attention modules, whose layers map: ``layers.EfficientAttention``,
``layers.LinearPositionAttention``), and SANet and Attention-to-Scale have no public official
code (see ``../shared/docs/mechanisms.md``), so those heads have nothing to port from;
``load_reference_weights`` says so.
"""

from keras_segattn.heads.base import Head
from keras_segattn.heads.attention_to_scale_head import AttentionToScaleHead
from keras_segattn.heads.caa_head import CAAHead
from keras_segattn.heads.cc_head import CCHead
from keras_segattn.heads.danet_head import DANetHead, DualAttentionHead
from keras_segattn.heads.eanet_head import EANetHead
from keras_segattn.heads.fcn_head import FCNHead, auxiliary_fcn_head
from keras_segattn.heads.flanet_head import FLANetHead, FLANetOutput
from keras_segattn.heads.isa_head import ISAHead, ISAModule
from keras_segattn.heads.lanet_head import LANetHead
from keras_segattn.heads.nl_head import NLHead
from keras_segattn.heads.sanet_head import SANetHead

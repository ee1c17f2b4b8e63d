"""``WarmupPolyDecay`` lives in ``keras_segattn.recipe`` (the one training recipe); this name
stays importable from here and from ``keras_segattn.training``."""

from keras_segattn.recipe import WarmupPolyDecay  # noqa: F401

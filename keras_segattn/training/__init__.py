"""keras_segattn.training: the standard segmentation training recipe.

* :class:`WarmupPolyDecay`: linear warm-up + poly(0.9) learning-rate schedule.
* :func:`make_callbacks`, :class:`AtomicCheckpoint`, :class:`EvaluationCallback`: atomic
  ``.keras`` checkpoints, ``BackupAndRestore`` resume, TerminateOnNaN, TensorBoard, CSV log
  for your own ``fit``.
* :func:`distribution_scope`: MirroredStrategy / MultiWorkerMirroredStrategy (TF),
  ``keras.distribution.DataParallel`` (JAX), single device (torch).
* :class:`TrainConfig` + :func:`train`: the whole run, as used by ``keras-segattn train``;
  it resumes exactly after any interruption (:mod:`keras_segattn.training.run_dir`).
"""

from keras_segattn.training.callbacks import AtomicCheckpoint  # noqa: F401
from keras_segattn.training.callbacks import EvaluationCallback  # noqa: F401
from keras_segattn.training.callbacks import atomic_save_model  # noqa: F401
from keras_segattn.training.callbacks import make_callbacks  # noqa: F401
from keras_segattn.training.distribution import DISTRIBUTIONS  # noqa: F401
from keras_segattn.training.distribution import distribution_scope  # noqa: F401
from keras_segattn.training.distribution import reset_distribution  # noqa: F401
from keras_segattn.training.distribution import resolve_distribution  # noqa: F401
from keras_segattn.training.schedules import WarmupPolyDecay  # noqa: F401
from keras_segattn.training.trainer import TrainConfig  # noqa: F401
from keras_segattn.training.trainer import train  # noqa: F401

"""keras_segattn.data: datasets and tf.data input pipelines for every Keras backend.

tf.data is the backend-neutral input path: ``model.fit`` / ``evaluate`` / ``predict``
take a ``tf.data.Dataset`` on TensorFlow, JAX and PyTorch alike, so the loaders and
pipelines here (written with TensorFlow ops, which run on the CPU input pipeline whatever
the Keras backend) feed every backend.

* :func:`load` (``name, split, data_dir, manual_dir``): ``{"image", "label"}`` datasets
  for ``"synthetic"`` (built in, generated locally), ``"cityscapes"``, ``"ade20k"``,
  ``"voc_aug"`` and ``"pascal_context"`` (manual downloads), labels as train ids with
  255 = ignore.
* :func:`dataset_info`: classes, palette, ignore label, default crop size;
  :func:`check_config`: whether ``load`` reads a builder config.
* :func:`make_pipeline`: augmentation (mmseg recipe), batching, prefetching ->
  ``(images float32 [0, 255] (B, H, W, 3), labels int32 (B, H, W))``.
* :func:`validate_labels`: scan a dataset for labels outside ``[0, num_classes)``.
* :func:`make_synthetic_example`: the NumPy generator of the synthetic dataset.

Example:

    from keras_segattn import data
    info = data.dataset_info("synthetic")
    train = data.make_pipeline(data.load("synthetic", "train"), training=True,
                               crop_size=info.crop_size, batch_size=16, seed=0)
    val = data.make_pipeline(data.load("synthetic", "val"), training=False, batch_size=16)
"""

from keras_segattn.data import augment  # noqa: F401
from keras_segattn.data.datasets import (  # noqa: F401
    CITYSCAPES_TRAIN_ID_TABLE,
    check_config,
    cityscapes_label_ids_to_train_ids,
    get_builder,
    load,
    reduce_zero_label,
)
from keras_segattn.data.info import DATASET_NAMES, DatasetInfo, dataset_info  # noqa: F401
from keras_segattn.data.pipeline import (  # noqa: F401
    check_labels,
    make_pipeline,
    validate_labels,
)
from keras_segattn.data.synthetic import make_synthetic_example, synthetic_arrays  # noqa: F401

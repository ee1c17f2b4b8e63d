"""``load``: tf.data datasets of ``{"image", "label"}`` for the datasets keras_segattn knows.

Every dataset comes out the same way, whatever its source format: ``image`` uint8
``(H, W, 3)`` RGB and ``label`` uint8 ``(H, W)`` with train ids ``0..num_classes-1`` and
255 = ignore. The per-dataset label mapping happens here:

* ``"synthetic"``: built-in, generated locally on first use (no download).
* ``"cityscapes"``: tfds ``cityscapes/semantic_segmentation`` (manual download of
  ``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip``); tfds stores
  ``gtFine_labelIds`` (0..33), mapped here to the 19 train ids (others -> 255).
* ``"ade20k"``: our builder over ``ADEChallengeData2016.zip``; mmseg's
  ``reduce_zero_label``: 0 ("other") -> 255, 1..150 -> 0..149.
* ``"voc_aug"``: our builder over VOC 2012 + SBD; labels 0..20, 255 borders kept.
* ``"pascal_context"``: our builder over VOC 2010 + the PASCAL-Context ``.mat`` release;
  stores mmseg's 60-value mask (0 = background), mapped here with ``reduce_zero_label``
  to mmseg's 59 classes (``PascalContextDataset59``), background -> 255.

tf.data is the backend-neutral input path: the datasets feed ``model.fit`` on
TensorFlow, JAX and PyTorch alike.
"""

import contextlib
import io
import logging
import re
import sys

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_segattn.data.info import (
    CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    DATASET_NAMES,
    IGNORE_LABEL,
    dataset_info,
)

class _TfdsDtypeWarning(logging.Filter):
    """Drop tensorflow-datasets' "`FeatureConnector.dtype` is deprecated" warning.

    tfds 4.9 logs it (up to ten times) from its own decoder of ``Tensor`` features stored as
    bytes (``tensor_feature.py``, ``decode_example`` reads ``self.dtype``), i.e. for our
    synthetic dataset's images and labels; nothing a user can change."""

    def filter(self, record):
        return "FeatureConnector.dtype` is deprecated" not in record.getMessage()


logging.getLogger("absl").addFilter(_TfdsDtypeWarning())

# uint8 lookup table: Cityscapes labelId (0..255) -> trainId (0..18) or 255.
CITYSCAPES_TRAIN_ID_TABLE = np.full(256, IGNORE_LABEL, np.uint8)
for _label_id, _train_id in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items():
    CITYSCAPES_TRAIN_ID_TABLE[_label_id] = _train_id


def cityscapes_label_ids_to_train_ids(label_ids):
    """Map Cityscapes ``labelIds`` (any integer tensor) to train ids, uint8, 255 = ignore."""
    label_ids = tf.cast(label_ids, tf.int32)
    valid = tf.logical_and(label_ids >= 0, label_ids < 256)
    mapped = tf.gather(tf.constant(CITYSCAPES_TRAIN_ID_TABLE), tf.clip_by_value(label_ids, 0, 255))
    return tf.where(valid, mapped, tf.constant(IGNORE_LABEL, tf.uint8))


def reduce_zero_label(label):
    """mmseg ``reduce_zero_label``: 0 -> 255, k -> k - 1 (uint8 out)."""
    label = tf.cast(label, tf.int32)
    return tf.cast(tf.where(label == 0, IGNORE_LABEL, label - 1), tf.uint8)


def _squeeze(label):
    return label[..., 0] if label.shape.rank == 3 else label


def _normalize_split(split):
    # "val" is an alias of "validation" (also inside "val[:10]" or "train+val").
    return re.sub(r"\bval\b", "validation", split) if isinstance(split, str) else split


def get_builder(name, data_dir=None, config=None):
    """The tfds builder behind ``load(name)`` (not prepared)."""
    check_config(name, config)  # the name, and the config for that dataset
    if name == "synthetic":
        from keras_segattn.data.builders.synthetic import Builder

        return Builder(data_dir=data_dir, config=config)
    if name == "ade20k":
        from keras_segattn.data.builders.ade20k import Builder

        return Builder(data_dir=data_dir)
    if name == "voc_aug":
        from keras_segattn.data.builders.voc_aug import Builder

        return Builder(data_dir=data_dir)
    if name == "pascal_context":
        from keras_segattn.data.builders.pascal_context import Builder

        return Builder(data_dir=data_dir)
    if name == "cityscapes":
        return tfds.builder("cityscapes", config=config or "semantic_segmentation",
                            data_dir=data_dir)
    raise AssertionError(name)  # pragma: no cover


# The builder configs ``load`` reads: the synthetic builder's, and Cityscapes' two with
# semantic labels (its ``stereo_disparity`` configs have none); the other builders have none.
CITYSCAPES_CONFIGS = ("semantic_segmentation", "semantic_segmentation_extra")


def check_config(name, config):
    """A one-line ``ValueError`` for a builder config ``load(name)`` cannot read (before
    tensorflow-datasets would fail with several lines, or, for the builders without
    configs, ignore it); ``None`` (the default config) passes."""
    dataset_info(name)  # validates the name
    if config is None:
        return
    if name == "synthetic":
        from keras_segattn.data.builders.synthetic import Builder

        known = tuple(Builder.builder_configs)
    else:
        known = CITYSCAPES_CONFIGS if name == "cityscapes" else ()
    if config not in known:
        choices = f"choose from {list(known)}" if known else "it has no builder configs"
        raise ValueError(f"unknown config {config!r} for dataset {name!r}; {choices}.")


def _to_example(name):
    if name == "cityscapes":
        return lambda ex: {"image": ex["image_left"],
                           "label": cityscapes_label_ids_to_train_ids(_squeeze(ex["segmentation_label"]))}
    if name in ("ade20k", "pascal_context"):
        return lambda ex: {"image": ex["image"], "label": reduce_zero_label(_squeeze(ex["annotation"]))}
    return lambda ex: {"image": ex["image"], "label": tf.cast(_squeeze(ex["label"]), tf.uint8)}


def _prepare(builder, name, download_config):
    """``builder.download_and_prepare`` announced in one line of ours.

    tfds prints "Downloading and preparing dataset Unknown size (download: Unknown size,
    ...)" for a generated dataset; that print (stdout) is replaced by our line. The built-in
    synthetic dataset is generated in seconds, so its progress bars are hidden too; the
    other datasets keep tfds' progress bars (their preparation takes minutes)."""
    if builder.is_prepared():
        return
    label = f"{name} ({builder.builder_config.name})" if builder.builder_config else name
    print(f"keras_segattn.data: preparing {label} in {builder.data_dir} (once; later runs "
          "read it from there)", file=sys.stderr, flush=True)
    quiet = contextlib.redirect_stderr(io.StringIO()) if name == "synthetic" \
        else contextlib.nullcontext()
    with contextlib.redirect_stdout(io.StringIO()), quiet:
        builder.download_and_prepare(download_config=download_config)


def load(name, split, data_dir=None, manual_dir=None, *, config=None, shuffle_files=False,
         download_and_prepare=True, read_config=None):
    """Load a split of a dataset as a ``tf.data.Dataset`` of ``{"image", "label"}``.

    Args:
        name: one of ``"synthetic"``, ``"cityscapes"``, ``"ade20k"``, ``"voc_aug"``,
            ``"pascal_context"``.
        split: tfds split string: ``"train"``, ``"validation"`` (alias ``"val"``),
            ``"test"`` (Cityscapes; its labels are placeholders), slices like
            ``"train[:100]"``.
        data_dir: tfds data directory (default ``~/tensorflow_datasets``); the dataset is
            prepared there on first use.
        manual_dir: directory holding the manually downloaded archives
            (``dataset_info(name).manual_files``); default ``<data_dir>/downloads/manual``.
        config: builder config (``"synthetic"``: ``"64px"`` (default), ``"32px"``,
            ``"96px_far"`` or ``"32px_tiny"``;
            ``"cityscapes"``: ``"semantic_segmentation"`` (default) or
            ``"semantic_segmentation_extra"``).
        shuffle_files: shuffle the record files (training).
        download_and_prepare: prepare the dataset if needed (set ``False`` to only read).
        read_config: optional ``tfds.ReadConfig``.

    Returns:
        ``tf.data.Dataset`` of ``{"image": uint8 (H, W, 3), "label": uint8 (H, W)}``;
        labels are train ids ``0..num_classes-1`` or 255 (ignore).

    Example:

    >>> from keras_segattn.data import load, make_pipeline, dataset_info
    >>> ds = load("synthetic", "train", data_dir="/tmp/tfds")  # doctest: +SKIP
    >>> train = make_pipeline(ds, training=True, crop_size=64, batch_size=16)  # doctest: +SKIP
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"Unknown dataset {name!r}. keras_segattn.data.load knows {list(DATASET_NAMES)}.")
    info = dataset_info(name)
    builder = get_builder(name, data_dir=data_dir, config=config)
    if download_and_prepare:
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        try:
            _prepare(builder, name, download_config)
        except AssertionError as error:
            if "manual" not in str(error).lower():
                raise
            raise FileNotFoundError(
                f"keras_segattn.data.load({name!r}): this dataset needs a manual download of "
                f"{', '.join(info.manual_files)}; put them in manual_dir (got "
                f"{manual_dir!r}). tensorflow-datasets said: {error}"
            ) from error
    ds = builder.as_dataset(split=_normalize_split(split), shuffle_files=shuffle_files,
                            read_config=read_config)
    return ds.map(_to_example(name), num_parallel_calls=tf.data.AUTOTUNE)

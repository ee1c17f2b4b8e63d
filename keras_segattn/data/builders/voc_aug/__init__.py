"""tfds builder of PASCAL VOC 2012 + SBD ("VOC aug", 21 classes)."""

from keras_segattn.data.builders.voc_aug.voc_aug_dataset_builder import Builder  # noqa: F401

"""tfds builder of ADE20K (SceneParsing ADEChallengeData2016, 150 classes)."""

from keras_segattn.data.builders.ade20k.ade20k_dataset_builder import Builder  # noqa: F401

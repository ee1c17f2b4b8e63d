"""tfds builder of the built-in synthetic long-range-context dataset."""

from keras_segattn.data.builders.synthetic.synthetic_dataset_builder import Builder  # noqa: F401

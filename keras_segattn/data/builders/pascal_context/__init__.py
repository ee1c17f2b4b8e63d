"""tfds builder of PASCAL Context (mmsegmentation's 59-class benchmark)."""

from keras_segattn.data.builders.pascal_context.pascal_context_dataset_builder import Builder  # noqa: F401

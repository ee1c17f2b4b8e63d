"""``segattn_synthetic``: the built-in dataset, generated locally (no download).

See :mod:`keras_segattn.data.synthetic` for the design. Example ``i`` of a split is
``make_synthetic_example(np.random.default_rng([SPLIT_SEEDS[split], i]), size)``, so the
prepared dataset is the same on every machine.
"""

import dataclasses
import numpy as np
import tensorflow_datasets as tfds

from keras_segattn.data import synthetic


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    size: int = synthetic.IMAGE_SIZE
    num_classes: int = synthetic.NUM_CLASSES
    num_train: int = 1000
    num_validation: int = 200
    cue_fraction: float = 1 / 8
    distance_fraction: float = 1 / 4


class Builder(tfds.core.GeneratorBasedBuilder):
    """Synthetic segmentation: shape classes decided by a distant colour cue."""

    name = "segattn_synthetic"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        SyntheticConfig(name="64px", description="64x64 images, 1000 train / 200 validation."),
        SyntheticConfig(name="32px", size=32,
                        description="32x32 images, 1000 train / 200 validation: the CLI's "
                                    "no-argument demo (DANet learns the cue in ~2 CPU minutes)."),
        SyntheticConfig(name="96px_far", size=96, cue_fraction=1 / 4, distance_fraction=3 / 8,
                        description="96x96 images, cue 24 px, every shape >= 36 px from it, "
                                    "1000 train / 200 validation: where attention heads beat "
                                    "FCN on a CPU (benchmarks/RESULTS.md)."),
        SyntheticConfig(name="32px_tiny", size=32, num_train=16, num_validation=8,
                        description="32x32 images, 16 train / 8 validation (for tests)."),
    ]
    DEFAULT_CONFIG_NAME = "64px"

    def _info(self):
        size = self.builder_config.size
        return self.dataset_info_from_configs(
            description=synthetic.__doc__,
            features=tfds.features.FeaturesDict({
                # Raw bytes, not PNG: encoding noisy 64x64 PNGs costs more than
                # generating them; 1200 examples take ~20 MB.
                "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.Tensor(shape=(size, size), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES),
                "index": np.int64,
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train),
            "validation": self._generate_examples("validation", config.num_validation),
        }

    def _generate_examples(self, split, num_examples):
        config = self.builder_config
        for index in range(num_examples):
            rng = np.random.default_rng([synthetic.SPLIT_SEEDS[split], index])
            image, label = synthetic.make_synthetic_example(
                rng, config.size, config.num_classes, cue_fraction=config.cue_fraction,
                distance_fraction=config.distance_fraction)
            yield index, {"image": image, "label": label, "index": index}

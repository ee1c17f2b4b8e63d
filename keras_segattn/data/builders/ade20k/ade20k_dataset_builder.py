"""``segattn_ade20k``: ADE20K SceneParsing benchmark (MIT, 150 classes).

Why our own builder: tfds' ``scene_parse150`` downloads the Places-Challenge *instance*
annotations (3-channel, 100 classes), not the 150-class semantic benchmark (see
``stack-notes.md`` table #5). This builder reads ``ADEChallengeData2016.zip``
(http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip, put in
``manual_dir``; or its unpacked ``ADEChallengeData2016/`` folder):

    ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_*.png  (uint8, 0..150)

Splits ``train`` (20,210) and ``validation`` (2,000). The stored ``annotation`` keeps the
raw values (0 = "other", 1..150 = classes); ``keras_segattn.data.load("ade20k")`` applies
mmseg's ``reduce_zero_label`` (0 -> 255, 1..150 -> 0..149).
"""

import tensorflow_datasets as tfds

from keras_segattn.data.builders._common import find_source

_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"


class Builder(tfds.core.GeneratorBasedBuilder):
    """ADE20K 150-class semantic segmentation (ADEChallengeData2016)."""

    name = "segattn_ade20k"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {_URL} and place ADEChallengeData2016.zip (or the unpacked "
        "ADEChallengeData2016/ folder) in manual_dir."
    )

    def _info(self):
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image_id": tfds.features.Text(),
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "annotation": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
            }),
            supervised_keys=("image", "annotation"),
            homepage="http://sceneparsing.csail.mit.edu/",
        )

    def _split_generators(self, dl_manager):
        root = find_source(dl_manager, "ADEChallengeData2016.zip", "ADEChallengeData2016",
                           "ADE20K", _URL) / "ADEChallengeData2016"
        return {
            "train": self._generate_examples(root, "training"),
            "validation": self._generate_examples(root, "validation"),
        }

    def _generate_examples(self, root, folder):
        images = sorted((root / "images" / folder).glob("*.jpg"))
        if not images:
            raise FileNotFoundError(f"ADE20K: no images in {root / 'images' / folder}.")
        for image_path in images:
            image_id = image_path.stem
            annotation = root / "annotations" / folder / f"{image_id}.png"
            if not annotation.exists():
                raise FileNotFoundError(f"ADE20K: annotation {annotation} is missing.")
            yield image_id, {"image_id": image_id, "image": image_path, "annotation": annotation}

"""``segattn_pascal_context``: PASCAL Context, mmsegmentation's 59-class benchmark.

Why our own builder: PASCAL Context is not in tfds (``stack-notes.md`` section 4). Put
in ``manual_dir`` (archives or unpacked folders):

* ``VOCtrainval_03-May-2010.tar`` (``VOCdevkit/VOC2010/``: ``JPEGImages/*.jpg`` and
  ``ImageSets/Main/{train,val}.txt``), from
  http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar
* ``trainval.tar.gz``, the full PASCAL-Context annotation (``trainval/<image_id>.mat``,
  MATLAB files whose ``LabelMap`` is an ``(H, W)`` map of 1-based ids into the release's
  459-class ``labels.txt``, 0 = unlabelled), from
  https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz (unpacked, its
  ``trainval/`` folder may also sit in ``VOCdevkit/VOC2010/``)

Labels, as mmseg builds them. ``tools/dataset_converters/pascal_context.py`` maps the
459-class ids with the sorted table :data:`CONTEXT_IDS` (60 ids, 0 first) to its index
``0..59`` (0 = background). The stored ``annotation`` is that ``0..59`` map (the values of
mmseg's ``SegmentationClassContext`` PNGs): 0 for unlabelled pixels and for the 400 classes
outside the table. ``keras_segattn.data.load("pascal_context")`` then applies mmseg's
``PascalContextDataset59`` ``reduce_zero_label`` (0 -> 255, k -> k - 1): the 59 classes
in mmseg's (alphabetical) order, everything else ignored.

Where we differ from mmseg: its converter reads ``trainval_merged.json`` (PASCAL in
Detail) through the ``detail`` API and asserts that every mask value is one of the 60
table ids, i.e. that JSON only holds the 59 classes. We read the original ``.mat``
release (no extra dependency). The ids are the same 459-class ids: the 59 table ids are
exactly the 1-based positions of mmseg's 59 class names in the alphabetical 459-name list
of ``labels.txt`` (2 aeroplane, 284 person, 458 wood, ...; checked against a copy of that
list, not the Stanford file itself), so a rare class is background 0 in both and 255
after ``reduce_zero_label``. Not verified: that the Detail JSON masks and the ``.mat``
label maps agree pixel for pixel.

Splits: ``train`` = VOC2010 ``ImageSets/Main/train.txt``, ``validation`` =
``ImageSets/Main/val.txt``; the commonly cited sizes are 4,998 and 5,105 images (10,103 =
VOC2010 trainval, every one annotated). mmseg takes its lists from the Detail phases
``"train"``/``"val"``, cited with the same sizes; we did not compare the lists
id by id. An image listed without its ``.mat`` is an error (skipping it would change the
benchmark). Reading the ``.mat`` files needs SciPy.
"""

import io

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from keras_segattn.data.builders._common import find_source

_VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar"
_CONTEXT_URL = "https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz"

# mmseg tools/dataset_converters/pascal_context.py ``_mapping``: 459-class ids (1-based
# into the release's labels.txt; 0 = background), sorted. Index in this tuple = the value
# of mmseg's 60-class mask; index - 1 = the PascalContextDataset59 class.
CONTEXT_IDS = tuple(sorted((
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33,
    162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68,
    326, 72, 458, 34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189,
    368, 113, 115,
)))
NUM_CONTEXT_IDS = 459

# 459-class id (0..459) -> 0..59; ids outside the table -> 0 (background).
_ID_TO_INDEX = np.zeros(NUM_CONTEXT_IDS + 1, np.uint8)
_ID_TO_INDEX[list(CONTEXT_IDS)] = np.arange(len(CONTEXT_IDS), dtype=np.uint8)


def context_ids_to_index(label_map):
    """Map a 459-class ``LabelMap`` to mmseg's 60-value mask (uint8, 0 = background).

    Ids in :data:`CONTEXT_IDS` become their index ``0..59``; 0 (unlabelled), the 400
    other classes and any out-of-range value become 0.
    """
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"PASCAL Context: LabelMap must be 2-D (H, W), got shape {label_map.shape}.")
    if not np.issubdtype(label_map.dtype, np.integer):
        if not np.all(np.isfinite(label_map)) or np.any(label_map != np.round(label_map)):
            raise ValueError(f"PASCAL Context: LabelMap holds non-integer values ({label_map.dtype}).")
    ids = label_map.astype(np.int64)
    index = np.zeros(ids.shape, np.uint8)
    valid = (ids >= 0) & (ids <= NUM_CONTEXT_IDS)
    index[valid] = _ID_TO_INDEX[ids[valid]]
    return index


def read_context_mat(path):
    """The ``(H, W)`` ``LabelMap`` array of a PASCAL-Context ``trainval/*.mat`` file."""
    try:
        import scipy.io
    except ImportError as error:  # pragma: no cover - scipy is a dependency
        raise ImportError("The pascal_context builder reads .mat files with SciPy: pip install scipy") from error
    with epath.Path(path).open("rb") as f:
        mat = scipy.io.loadmat(f)
    if "LabelMap" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"PASCAL Context: {path} has no 'LabelMap' (variables: {keys}); is it "
                         f"a file of {_CONTEXT_URL}?")
    return mat["LabelMap"]


def _png(mask):
    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _read_ids(path):
    if not path.exists():
        raise FileNotFoundError(f"PASCAL Context: split list {path} is missing; it is part of "
                                f"{_VOC_URL}.")
    with path.open() as f:
        return [line.split()[0] for line in f if line.strip()]


def _mat_dir(root):
    """The folder holding ``<image_id>.mat`` (``trainval/``, once nested, or the root)."""
    folder = root / "trainval"
    if not folder.is_dir():
        return root
    return folder / "trainval" if (folder / "trainval").is_dir() else folder


class Builder(tfds.core.GeneratorBasedBuilder):
    """PASCAL Context 59-class semantic segmentation (VOC2010 images + .mat annotations)."""

    name = "segattn_pascal_context"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {_VOC_URL} and {_CONTEXT_URL} and place VOCtrainval_03-May-2010.tar and "
        "trainval.tar.gz (or the unpacked VOCdevkit/VOC2010/ and trainval/ folders) in manual_dir."
    )

    def _info(self):
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image_id": tfds.features.Text(),
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                # mmseg's 60-value mask: 0 = background, 1..59 = the 59 classes.
                "annotation": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
            }),
            supervised_keys=("image", "annotation"),
            homepage="https://cs.stanford.edu/~roozbeh/pascal-context/",
        )

    def _split_generators(self, dl_manager):
        voc = find_source(dl_manager, "VOCtrainval_03-May-2010.tar", "VOCdevkit/VOC2010",
                          "PASCAL Context", _VOC_URL) / "VOCdevkit" / "VOC2010"
        try:
            context = find_source(dl_manager, "trainval.tar.gz", "trainval", "PASCAL Context",
                                  _CONTEXT_URL)
        except FileNotFoundError:
            if not (voc / "trainval").is_dir():  # also accepted: unpacked into VOC2010/
                raise
            context = voc
        mats = _mat_dir(context)
        sets = voc / "ImageSets" / "Main"
        return {
            "train": self._generate_examples(voc, mats, _read_ids(sets / "train.txt"), "train"),
            "validation": self._generate_examples(voc, mats, _read_ids(sets / "val.txt"), "val"),
        }

    def _generate_examples(self, voc, mats, ids, split):
        for image_id in sorted(set(ids)):
            image = voc / "JPEGImages" / f"{image_id}.jpg"
            mat = mats / f"{image_id}.mat"
            if not image.exists():
                raise FileNotFoundError(f"PASCAL Context: image {image} (listed in "
                                        f"ImageSets/Main/{split}.txt) is missing.")
            if not mat.exists():
                raise FileNotFoundError(
                    f"PASCAL Context: image {image_id} (listed in ImageSets/Main/{split}.txt) "
                    f"has no annotation {mat}; {_CONTEXT_URL} holds one .mat per VOC2010 "
                    "train/val image."
                )
            mask = context_ids_to_index(read_context_mat(mat))
            with image.open("rb") as f:
                width, height = Image.open(f).size
            if mask.shape != (height, width):
                raise ValueError(f"PASCAL Context: {mat} LabelMap is {mask.shape}, but image "
                                 f"{image_id} is {(height, width)}.")
            yield image_id, {"image_id": image_id, "image": image, "annotation": _png(mask)}

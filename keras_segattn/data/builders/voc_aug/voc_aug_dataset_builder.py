"""``segattn_voc_aug``: PASCAL VOC 2012 segmentation augmented with SBD (21 classes).

Why our own builder: tfds' ``voc`` has no segmentation masks and SBD is not in tfds
(``stack-notes.md`` table #6). Put in ``manual_dir`` (archives or unpacked folders):

* ``VOCtrainval_11-May-2012.tar`` (``VOCdevkit/VOC2012/``: ``JPEGImages/*.jpg``,
  ``SegmentationClass/*.png`` palette PNGs whose indices are the labels, 255 = the
  "void" object borders, and ``ImageSets/Segmentation/{train,val}.txt``), from
  http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar
* ``benchmark.tgz`` of the Semantic Boundaries Dataset (``benchmark_RELEASE/dataset/``:
  ``cls/*.mat`` with ``GTcls.Segmentation``, ``img/*.jpg``, ``train.txt``, ``val.txt``),
  from http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz

Splits, as mmseg's ``tools/dataset_converters/voc_aug.py`` builds them:

* ``train`` = (VOC seg train + SBD train + SBD val) - VOC seg val: 10,582 images. Images
  that have a VOC ``SegmentationClass`` PNG use it (with its 255 borders, kept as
  ignore); the others use the SBD ``.mat`` mask.
* ``validation`` = VOC seg val: 1,449 images with the VOC PNG masks.

Reading the ``.mat`` files needs SciPy.
"""

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from keras_segattn.data.builders._common import find_source

_VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
_SBD_URL = ("http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
            "semantic_contours/benchmark.tgz")


def read_sbd_mat(path):
    """The ``(H, W)`` uint8 class mask of an SBD ``cls/*.mat`` file (``GTcls.Segmentation``)."""
    try:
        import scipy.io
    except ImportError as error:  # pragma: no cover - scipy is a dependency
        raise ImportError("The voc_aug builder reads SBD .mat files with SciPy: pip install scipy") from error
    with open(path, "rb") as f:
        mat = scipy.io.loadmat(f)
    return np.asarray(mat["GTcls"]["Segmentation"][0, 0], dtype=np.uint8)


def read_voc_png(path):
    """The ``(H, W)`` uint8 palette indices of a VOC ``SegmentationClass`` PNG."""
    with open(path, "rb") as f:
        image = Image.open(f)
        if image.mode not in ("P", "L"):
            raise ValueError(f"VOC aug: {path} is a {image.mode} PNG, expected a palette PNG.")
        return np.asarray(image, dtype=np.uint8)


def _png(mask):
    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _read_ids(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


class Builder(tfds.core.GeneratorBasedBuilder):
    """PASCAL VOC 2012 + SBD augmented semantic segmentation (21 classes)."""

    name = "segattn_voc_aug"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {_VOC_URL} and {_SBD_URL} and place VOCtrainval_11-May-2012.tar and "
        "benchmark.tgz (or the unpacked VOCdevkit/ and benchmark_RELEASE/ folders) in manual_dir."
    )

    def _info(self):
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image_id": tfds.features.Text(),
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
            }),
            supervised_keys=("image", "label"),
            homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        )

    def _split_generators(self, dl_manager):
        voc = find_source(dl_manager, "VOCtrainval_11-May-2012.tar", "VOCdevkit",
                          "VOC aug", _VOC_URL) / "VOCdevkit" / "VOC2012"
        sbd = find_source(dl_manager, "benchmark.tgz", "benchmark_RELEASE",
                          "VOC aug", _SBD_URL) / "benchmark_RELEASE" / "dataset"
        sets = voc / "ImageSets" / "Segmentation"
        voc_train, voc_val = _read_ids(sets / "train.txt"), _read_ids(sets / "val.txt")
        sbd_ids = _read_ids(sbd / "train.txt") + _read_ids(sbd / "val.txt")
        train_ids = sorted((set(voc_train) | set(sbd_ids)) - set(voc_val))
        voc_masks = set(voc_train) | set(voc_val)
        return {
            "train": self._generate_examples(voc, sbd, train_ids, voc_masks),
            "validation": self._generate_examples(voc, sbd, sorted(voc_val), voc_masks),
        }

    def _generate_examples(self, voc, sbd, ids, voc_masks):
        for image_id in ids:
            image = voc / "JPEGImages" / f"{image_id}.jpg"
            if not image.exists():
                image = sbd / "img" / f"{image_id}.jpg"
            if image_id in voc_masks:
                mask = read_voc_png(voc / "SegmentationClass" / f"{image_id}.png")
            else:
                mask = read_sbd_mat(sbd / "cls" / f"{image_id}.mat")
            yield image_id, {"image_id": image_id, "image": image, "label": _png(mask)}

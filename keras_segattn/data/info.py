"""Static metadata of the datasets that :func:`keras_segattn.data.load` knows.

:func:`dataset_info` returns a :class:`DatasetInfo` with the number of classes, the class
names, a palette (one RGB colour per class, used to colourise predictions), the ignore
label, the default training crop size and the mmsegmentation "scale" used by the
standard random-resize recipe (see ``../shared/docs/stack-notes.md`` section 3).

Class names and palettes follow mmsegmentation's dataset classes (``mmseg/datasets/``)
so that colourised predictions look like the published ones; the Cityscapes colours are
those of ``cityscapesScripts/helpers/labels.py``.
"""

import dataclasses

import numpy as np

from keras_segattn.common import IGNORE_INDEX as IGNORE_LABEL  # 255

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
# labelId (0..33 in gtFine_labelIds.png) -> trainId (0..18); every other id -> 255.
CITYSCAPES_LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain",
    "plant", "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house",
    "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock",
    "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column",
    "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop",
    "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent",
    "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
    "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)
ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3),
    (120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7),
    (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70), (8, 255, 51),
    (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3),
    (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71),
    (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7),
    (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255),
    (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140), (250, 10, 15),
    (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0),
    (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112),
    (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173),
    (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255),
    (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20), (255, 184, 184),
    (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255),
    (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0),
    (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255),
    (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255),
    (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235),
    (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0),
    (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255),
    (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0),
    (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

# mmseg ``PascalContextDataset59`` (mmseg/datasets/pascal_context.py): classes and palette.
PASCAL_CONTEXT_59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck",
    "tvmonitor", "wall", "water", "window", "wood",
)
PASCAL_CONTEXT_59_PALETTE = (
    (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255),
    (235, 255, 7), (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82),
    (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224),
    (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255), (8, 255, 214),
    (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8),
    (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255),
    (160, 150, 20), (0, 163, 255), (140, 140, 140), (250, 10, 15), (20, 255, 0),
    (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255),
    (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
)


def voc_palette(num_classes=256):
    """The PASCAL VOC colour map (bit-interleaved class index), ``(num_classes, 3)`` uint8.

    This is the palette stored in VOC ``SegmentationClass`` PNGs (index 255 = the
    cream-coloured "void" border is ``(224, 224, 192)``).
    """
    palette = np.zeros((num_classes, 3), np.uint8)
    for index in range(num_classes):
        c, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[index] = (r, g, b)
    return palette


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and the training/eval pipelines need to know about a dataset.

    Attributes:
        name: the name accepted by :func:`keras_segattn.data.load`.
        num_classes: number of evaluated classes (labels are ``0..num_classes-1``).
        class_names: tuple of ``num_classes`` names.
        palette: ``(num_classes, 3)`` uint8 array, one RGB colour per class.
        ignore_label: label value excluded from the loss and the metrics (255).
        crop_size: default training crop ``(height, width)`` (mmseg recipe).
        scale: mmseg ``RandomResize`` base scale ``(long_edge, short_edge)`` used with
            ``ratio_range=(0.5, 2.0)``, or ``None`` to rescale relative to each image.
        ratio_range: default random-rescale ratio range for training; ``(0.5, 2.0)``
            (mmseg) except for "synthetic", ``(0.5, 1.0)``: zooming in could crop the
            distant cue out of the image and make the labels unpredictable.
        splits: split names accepted by ``load`` (``"val"`` is an alias of
            ``"validation"``).
        tfds_name: the tensorflow-datasets builder behind ``load``.
        manual_files: files the user must download by hand and put in ``manual_dir``.
    """

    name: str
    num_classes: int
    class_names: tuple
    palette: np.ndarray
    ignore_label: int = IGNORE_LABEL
    crop_size: tuple = (512, 512)
    scale: tuple = None
    ratio_range: tuple = (0.5, 2.0)
    splits: tuple = ("train", "validation")
    tfds_name: str = ""
    manual_files: tuple = ()

    def colorize(self, label):
        """Map an integer label map ``(..., H, W)`` to RGB ``(..., H, W, 3)`` uint8.

        The ignore label (and any value >= ``num_classes``) is drawn black.
        """
        label = np.asarray(label).astype(np.int64)
        table = np.zeros((256, 3), np.uint8)
        table[: self.num_classes] = self.palette
        return table[np.clip(label, 0, 255)]


def _infos():
    from keras_segattn.data import synthetic  # local import: avoids a cycle

    return {
        "synthetic": DatasetInfo(
            name="synthetic",
            num_classes=synthetic.NUM_CLASSES,
            class_names=synthetic.CLASS_NAMES,
            palette=np.asarray(synthetic.PALETTE, np.uint8),
            crop_size=(synthetic.IMAGE_SIZE, synthetic.IMAGE_SIZE),
            scale=None,
            ratio_range=(0.5, 1.0),
            tfds_name="segattn_synthetic",
        ),
        "cityscapes": DatasetInfo(
            name="cityscapes",
            num_classes=19,
            class_names=CITYSCAPES_CLASSES,
            palette=np.asarray(CITYSCAPES_PALETTE, np.uint8),
            crop_size=(512, 1024),
            scale=(2048, 1024),
            splits=("train", "validation", "test"),
            tfds_name="cityscapes/semantic_segmentation",
            manual_files=("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip"),
        ),
        "ade20k": DatasetInfo(
            name="ade20k",
            num_classes=150,
            class_names=ADE20K_CLASSES,
            palette=np.asarray(ADE20K_PALETTE, np.uint8),
            crop_size=(512, 512),
            scale=(2048, 512),
            tfds_name="segattn_ade20k",
            manual_files=("ADEChallengeData2016.zip",),
        ),
        "voc_aug": DatasetInfo(
            name="voc_aug",
            num_classes=21,
            class_names=VOC_CLASSES,
            palette=voc_palette(21),
            crop_size=(512, 512),
            scale=(2048, 512),
            tfds_name="segattn_voc_aug",
            manual_files=("VOCtrainval_11-May-2012.tar", "benchmark.tgz"),
        ),
        "pascal_context": DatasetInfo(
            name="pascal_context",
            num_classes=59,
            class_names=PASCAL_CONTEXT_59_CLASSES,
            palette=np.asarray(PASCAL_CONTEXT_59_PALETTE, np.uint8),
            crop_size=(480, 480),
            scale=(520, 520),
            tfds_name="segattn_pascal_context",
            manual_files=("VOCtrainval_03-May-2010.tar", "trainval.tar.gz"),
        ),
    }


DATASET_NAMES = ("synthetic", "cityscapes", "ade20k", "voc_aug", "pascal_context")


def dataset_info(name):
    """The :class:`DatasetInfo` of a dataset known to :func:`keras_segattn.data.load`.

    Example:

    >>> from keras_segattn.data import dataset_info
    >>> info = dataset_info("cityscapes")
    >>> info.num_classes, info.class_names[0], info.palette[0].tolist()
    (19, 'road', [128, 64, 128])
    """
    infos = _infos()
    if name not in infos:
        raise ValueError(
            f"Unknown dataset {name!r}. keras_segattn.data knows {sorted(infos)}."
        )
    return infos[name]

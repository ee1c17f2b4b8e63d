"""Colour palettes of the supported datasets (RGB uint8, index = class id).

``get_palette(name)`` returns a ``(K, 3)`` uint8 array for ``cityscapes`` (19 trainIds,
cityscapesScripts colours), ``ade20k`` (150 classes, mmsegmentation's ``ADE20KDataset``
palette), ``voc`` (21 classes, the PASCAL VOC bit-interleaved colour map),
``pascal_context`` (59 classes, mmsegmentation's ``PascalContextDataset59`` palette) and ``synthetic``
(the built-in dataset; taken from ``keras_segattn.data.dataset_info`` when it defines a
palette). Label 255 (ignore) is drawn black by :func:`keras_segattn.inference.colorize`.
"""

import numpy as np

CITYSCAPES = [
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
    [0, 80, 100], [0, 0, 230], [119, 11, 32],
]

ADE20K = [
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3],
    [120, 120, 80], [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7],
    [224, 5, 255], [235, 255, 7], [150, 5, 61], [120, 120, 70], [8, 255, 51],
    [255, 6, 82], [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3],
    [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255], [255, 7, 71],
    [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
    [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10],
    [7, 255, 255], [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7],
    [255, 122, 8], [0, 255, 20], [255, 8, 41], [255, 5, 153], [6, 51, 255],
    [235, 12, 255], [160, 150, 20], [0, 163, 255], [140, 140, 140], [250, 10, 15],
    [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0], [153, 255, 0],
    [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
    [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112],
    [0, 255, 133], [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0],
    [0, 143, 255], [51, 255, 0], [0, 82, 255], [0, 255, 41], [0, 255, 173],
    [10, 0, 255], [173, 255, 0], [0, 255, 153], [255, 92, 0], [255, 0, 255],
    [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20], [255, 184, 184],
    [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],
    [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255],
    [0, 122, 255], [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0],
    [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0], [8, 184, 170],
    [133, 0, 255], [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255],
    [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255], [112, 224, 255],
    [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
    [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235],
    [245, 0, 255], [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0],
    [0, 204, 255], [20, 0, 255], [255, 255, 0], [0, 153, 255], [0, 41, 255],
    [0, 255, 204], [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255],
    [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255], [184, 255, 0],
    [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],
]


def voc_palette(num_classes=21):
    """The PASCAL VOC colour map (bits of the class id interleaved into R, G, B)."""
    palette = np.zeros((num_classes, 3), "uint8")
    for k in range(num_classes):
        label, r, g, b = k, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((label >> 0) & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        palette[k] = (r, g, b)
    return palette


def synthetic_palette(num_classes=8):
    """Distinct colours for the built-in synthetic dataset (VOC-style, background black)."""
    try:
        from keras_segattn.data import dataset_info

        info = dataset_info("synthetic")
        palette = info.get("palette") if isinstance(info, dict) else getattr(info, "palette", None)
        if palette is not None:
            return np.asarray(palette, "uint8").reshape(-1, 3)
    except Exception:  # noqa: BLE001 - the data package may not define it (yet)
        pass
    return voc_palette(max(num_classes, 21))


PALETTES = ("cityscapes", "ade20k", "voc", "pascal_context", "synthetic")
_DATASET_NAMES = {"cityscapes": "cityscapes", "ade20k": "ade20k", "ade": "ade20k",
                  "voc": "voc_aug", "vocaug": "voc_aug", "pascalvoc": "voc_aug",
                  "pascalcontext": "pascal_context", "pascalcontext59": "pascal_context",
                  "synthetic": "synthetic"}


def get_palette(name):
    """``(K, 3)`` uint8 palette by dataset name (case-insensitive).

    Uses ``keras_segattn.data.dataset_info(name).palette`` (the data package owns the
    palettes); the tables in this module are a fallback with the same colours.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    dataset = _DATASET_NAMES.get(key, name)
    try:
        from keras_segattn.data import dataset_info

        palette = getattr(dataset_info(dataset), "palette", None)
        if palette is not None:
            return np.asarray(palette, "uint8").reshape(-1, 3)
    except Exception:  # noqa: BLE001 - fall back to the local tables
        pass
    if key == "cityscapes":
        return np.asarray(CITYSCAPES, "uint8")
    if key in ("ade20k", "ade"):
        return np.asarray(ADE20K, "uint8")
    if key in ("voc", "pascalvoc", "vocaug"):
        return voc_palette(21)
    if key in ("pascalcontext", "pascalcontext59"):
        return np.asarray(ADE20K[1:60], "uint8")  # mmseg's PascalContextDataset59 colours
    if key == "synthetic":
        return synthetic_palette()
    raise ValueError(f"unknown palette {name!r}; choose one of {PALETTES}")

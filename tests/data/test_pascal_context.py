"""PASCAL Context (59 classes): our builder on tiny fake VOC2010 + .mat archives, the label
mapping checked against an independently written id table, errors, dataset_info."""

import io
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_segattn import data
from keras_segattn.palettes import get_palette

# mmseg tools/dataset_converters/pascal_context.py `_mapping` as written there (unsorted);
# mmseg sorts it, so the 60-value mask is the position in the sorted list.
MMSEG_MAPPING = [0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159,
                 416, 33, 162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232,
                 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355, 85, 347, 220, 349, 360, 98,
                 187, 104, 105, 366, 189, 368, 113, 115]
SORTED_IDS = sorted(MMSEG_MAPPING)
# mmseg PascalContextDataset59 METAINFO classes.
MMSEG_CLASSES_59 = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck",
    "tvmonitor", "wall", "water", "window", "wood",
)
RARE_IDS = [1, 3, 100, 300, 459]  # accordion, airconditioner, ... wool: not in the 59

TRAIN = ["2008_000002", "2008_000003"]
VAL = ["2008_000007", "2010_000001"]
H, W = 12, 16


def expected_mmseg60(label_map):
    """0..59: position of the id in the sorted mmseg table, 0 for any other id."""
    return np.vectorize(lambda i: SORTED_IDS.index(i) if i in SORTED_IDS else 0)(label_map)


def expected_labels(label_map):
    """load() output: PascalContextDataset59 (reduce_zero_label), 255 = ignore."""
    out = expected_mmseg60(label_map) - 1
    return np.where(out < 0, 255, out).astype(np.uint8)


def jpeg_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def mat_bytes(label_map):
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"LabelMap": label_map})
    return buffer.getvalue()


def add_bytes(tar, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def make_label_maps(seed=0):
    rng = np.random.default_rng(seed)
    pool = np.array(SORTED_IDS + RARE_IDS, np.uint16)
    maps = {}
    for k, image_id in enumerate(TRAIN + VAL):
        label_map = rng.choice(pool, size=(H, W)).astype(np.uint16)
        if k == 0:  # every table id, 0 and the rare ids once
            label_map.reshape(-1)[: pool.size] = pool
        maps[image_id] = label_map
    return maps


def make_fake_context(manual_dir, packed=True, missing_mat=None, with_context=True,
                      context_prefix=""):
    """VOCtrainval_03-May-2010.tar + trainval.tar.gz (or their unpacked folders; the
    unpacked trainval/ goes under ``context_prefix``)."""
    rng = np.random.default_rng(1)
    os.makedirs(manual_dir, exist_ok=True)
    maps = make_label_maps()
    voc_files = {
        "VOCdevkit/VOC2010/ImageSets/Main/train.txt": "\n".join(TRAIN).encode() + b"\n",
        "VOCdevkit/VOC2010/ImageSets/Main/val.txt": "\n".join(VAL).encode() + b"\n",
        # per-class lists share the folder and are not splits
        "VOCdevkit/VOC2010/ImageSets/Main/aeroplane_train.txt": f"{TRAIN[0]} -1\n".encode(),
    }
    for image_id in TRAIN + VAL + ["2008_000099"]:  # one VOC image outside the splits
        image = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
        voc_files[f"VOCdevkit/VOC2010/JPEGImages/{image_id}.jpg"] = jpeg_bytes(image)
    context_files = {f"trainval/{image_id}.mat": mat_bytes(label_map)
                     for image_id, label_map in maps.items() if image_id != missing_mat}
    context_files["labels.txt"] = b"1: accordion\n2: aeroplane\n"
    archives = [("VOCtrainval_03-May-2010.tar", "w", voc_files)]
    if with_context:
        archives.append(("trainval.tar.gz", "w:gz", context_files))
    for archive, mode, files in archives:
        prefix = context_prefix if archive == "trainval.tar.gz" else ""
        if packed:
            with tarfile.open(os.path.join(manual_dir, archive), mode) as tar:
                for name, payload in files.items():
                    add_bytes(tar, name, payload)
        else:
            for name, payload in files.items():
                path = os.path.join(manual_dir, prefix, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(payload)
    return maps


def test_id_table_spot_checks():
    """The independent table agrees with mmseg's class order on named examples."""
    assert len(SORTED_IDS) == 60 and len(set(SORTED_IDS)) == 60 and SORTED_IDS[0] == 0
    names = dict(zip(SORTED_IDS[1:], MMSEG_CLASSES_59))
    assert names[2] == "aeroplane" and names[458] == "wood"
    assert names[284] == "person" and names[360] == "sky" and names[9] == "bag"
    np.testing.assert_array_equal(expected_labels(np.array([[2, 458, 0, 1, 459, 284]])),
                                  [[0, 58, 255, 255, 255, 36]])


@pytest.mark.parametrize("packed", [True, False], ids=["archives", "unpacked"])
def test_pascal_context_builder(tmp_path, packed):
    maps = make_fake_context(str(tmp_path / "manual"), packed=packed)
    data_dir = str(tmp_path / "tfds")
    train = data.load("pascal_context", "train", data_dir=data_dir, manual_dir=str(tmp_path / "manual"))
    val = data.load("pascal_context", "val", data_dir=data_dir)
    assert int(train.cardinality()) == 2 and int(val.cardinality()) == 2

    builder = data.get_builder("pascal_context", data_dir=data_dir)
    assert builder.info.splits["train"].num_examples == 2
    assert builder.info.splits["validation"].num_examples == 2
    for split, ids in (("train", TRAIN), ("validation", VAL)):
        raw = list(builder.as_dataset(split=split).as_numpy_iterator())
        assert sorted(ex["image_id"].decode() for ex in raw) == ids
        for ex in raw:  # stored: mmseg's 60-value SegmentationClassContext mask
            label_map = maps[ex["image_id"].decode()]
            np.testing.assert_array_equal(ex["annotation"][..., 0], expected_mmseg60(label_map))
            assert ex["image"].shape == (H, W, 3)

    # load(): order follows the builder, so pair examples through the stored ids
    ordered = {split: [ex["image_id"].decode() for ex in builder.as_dataset(split=split).as_numpy_iterator()]
               for split in ("train", "validation")}
    for ds, split in ((train, "train"), (val, "validation")):
        for image_id, ex in zip(ordered[split], ds.as_numpy_iterator()):
            assert ex["image"].shape == (H, W, 3) and ex["image"].dtype == np.uint8
            assert ex["label"].shape == (H, W) and ex["label"].dtype == np.uint8
            np.testing.assert_array_equal(ex["label"], expected_labels(maps[image_id]), err_msg=image_id)

    first = next(ex["label"] for image_id, ex in zip(ordered["train"], train.as_numpy_iterator())
                 if image_id == TRAIN[0])
    flat, ids = first.reshape(-1), maps[TRAIN[0]].reshape(-1)
    info = data.dataset_info("pascal_context")
    assert set(flat[np.isin(ids, SORTED_IDS[1:])]) == set(range(59))  # every class present
    assert info.class_names[flat[list(ids).index(2)]] == "aeroplane"
    assert info.class_names[flat[list(ids).index(458)]] == "wood"
    assert flat[list(ids).index(0)] == 255  # unlabelled
    assert all(flat[list(ids).index(rare)] == 255 for rare in RARE_IDS)  # 400 rare classes
    assert data.validate_labels(train, 59, name="pascal_context") == 2


def test_missing_archives_are_clear_errors(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(FileNotFoundError, match=r"(?s)VOCtrainval_03-May-2010\.tar.*host\.robots\.ox\.ac\.uk"):
        data.load("pascal_context", "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    make_fake_context(str(manual), with_context=False)
    with pytest.raises(FileNotFoundError, match=r"(?s)trainval\.tar\.gz.*cs\.stanford\.edu/~roozbeh/pascal-context"):
        data.load("pascal_context", "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))


def test_image_without_annotation_is_an_error(tmp_path):
    make_fake_context(str(tmp_path / "manual"), packed=False, missing_mat=VAL[1],
                      context_prefix="VOCdevkit/VOC2010")  # the trainval/ folder inside VOC2010/
    with pytest.raises(FileNotFoundError, match=f"{VAL[1]}.*no annotation"):
        data.load("pascal_context", "val", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "manual"))


def test_label_mapping_with_mock_data():
    """load() maps the stored 0..59 mask with reduce_zero_label (no build needed)."""
    annotation = np.arange(60, dtype=np.uint8).reshape(6, 10, 1)

    def as_dataset_fn(builder, split, **kwargs):
        assert builder.name == "segattn_pascal_context" and split == "validation"
        return tf.data.Dataset.from_tensors({"image_id": "2008_000002",
                                             "image": np.zeros((6, 10, 3), np.uint8),
                                             "annotation": annotation}).repeat(2)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset_fn):
        examples = list(data.load("pascal_context", "val").as_numpy_iterator())
    assert len(examples) == 2
    np.testing.assert_array_equal(examples[0]["label"].reshape(-1), [255] + list(range(59)))


def test_dataset_info_and_palette():
    info = data.dataset_info("pascal_context")
    assert info.num_classes == 59 and info.class_names == MMSEG_CLASSES_59
    assert info.ignore_label == 255 and "pascal_context" in data.DATASET_NAMES
    assert info.palette.shape == (59, 3) and info.palette.dtype == np.uint8
    # mmseg PascalContextDataset59 palette: first and last colours
    assert info.palette[0].tolist() == [180, 120, 120] and info.palette[-1].tolist() == [31, 0, 255]
    assert info.crop_size == (480, 480) and info.scale == (520, 520)  # configs/_base_/datasets/pascal_context_59.py
    assert info.tfds_name == "segattn_pascal_context"
    assert info.manual_files == ("VOCtrainval_03-May-2010.tar", "trainval.tar.gz")
    for name in ("pascal_context", "pascal-context", "PascalContext59"):
        np.testing.assert_array_equal(get_palette(name), info.palette)
    colours = info.colorize(np.array([[0, 58, 255]]))
    assert colours[0, 2].tolist() == [0, 0, 0] and colours[0, 1].tolist() == [31, 0, 255]

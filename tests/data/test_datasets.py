"""Dataset loaders: our ADE20K / VOC-aug builders on tiny fake archives, Cityscapes via
tfds.testing.mock_data, label mappings and dataset_info."""

import io
import os
import tarfile
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_segattn import data
from keras_segattn.data.info import voc_palette


def jpeg_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def png_bytes(array, palette=None):
    image = Image.fromarray(array, mode="L")
    if palette is not None:
        image = image.convert("P")
        image.putpalette(palette.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def rand_image(rng, h=32, w=40):
    return rng.integers(0, 256, (h, w, 3)).astype(np.uint8)


def add_bytes(tar, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


# --- ADE20K -----------------------------------------------------------------------------


def make_fake_ade(manual_dir):
    rng = np.random.default_rng(0)
    annotations = {}
    os.makedirs(manual_dir, exist_ok=True)
    with zipfile.ZipFile(os.path.join(manual_dir, "ADEChallengeData2016.zip"), "w") as zf:
        for folder, ids in (("training", ["ADE_train_00000001", "ADE_train_00000002"]),
                            ("validation", ["ADE_val_00000001"])):
            for image_id in ids:
                annotation = rng.integers(0, 151, (32, 40)).astype(np.uint8)
                annotation[0, :3] = (0, 1, 150)
                annotations[image_id] = annotation
                root = "ADEChallengeData2016"
                zf.writestr(f"{root}/images/{folder}/{image_id}.jpg", jpeg_bytes(rand_image(rng)))
                zf.writestr(f"{root}/annotations/{folder}/{image_id}.png", png_bytes(annotation))
        zf.writestr("ADEChallengeData2016/objectInfo150.txt", "Idx\tRatio\tTrain\tVal\tName\n")
    return annotations


def test_ade20k_builder_on_fake_zip(tmp_path):
    annotations = make_fake_ade(str(tmp_path / "manual"))
    kwargs = dict(data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "manual"))
    train = data.load("ade20k", "train", **kwargs)
    val = data.load("ade20k", "val", **kwargs)
    assert int(train.cardinality()) == 2 and int(val.cardinality()) == 1
    builder = data.get_builder("ade20k", data_dir=str(tmp_path / "tfds"))
    raw = {ex["image_id"].decode(): ex["annotation"][..., 0]
           for ex in builder.as_dataset(split="train").as_numpy_iterator()}
    labels = [ex["label"] for ex in train.as_numpy_iterator()]
    for image_id, annotation in raw.items():
        np.testing.assert_array_equal(annotation, annotations[image_id])  # raw values stored
    expected = {annotations[k].tobytes() for k in raw}
    for label in labels:
        assert label.shape == (32, 40) and label.dtype == np.uint8
        np.testing.assert_array_equal(label[0, :3], [255, 0, 149])  # reduce_zero_label
        # 1..150 -> 0..149, 0 -> 255, i.e. uint8 (label + 1) gives back the annotation
        assert (label.astype(np.uint8) + np.uint8(1)).tobytes() in expected
    image = next(iter(train))["image"]
    assert image.shape == (32, 40, 3) and image.dtype == tf.uint8
    assert data.validate_labels(train, 150, name="ade20k") == 2


def test_missing_manual_archive_is_a_clear_error(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "unrelated.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="ADEChallengeData2016.zip"):
        data.load("ade20k", "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "manual"))


# --- VOC aug ----------------------------------------------------------------------------

VOC_TRAIN = ["2007_000032", "2007_000039"]
VOC_VAL = ["2007_000033"]
SBD_TRAIN = ["2008_000002", "2007_000033"]  # 2007_000033 is VOC val: excluded from train
SBD_VAL = ["2008_000003", "2007_000032"]  # 2007_000032 has a VOC mask: the VOC PNG wins


def make_fake_voc_aug(manual_dir):
    import scipy.io

    rng = np.random.default_rng(1)
    os.makedirs(manual_dir, exist_ok=True)
    masks = {}
    palette = voc_palette(256)
    with tarfile.open(os.path.join(manual_dir, "VOCtrainval_11-May-2012.tar"), "w") as tar:
        root = "VOCdevkit/VOC2012"
        add_bytes(tar, f"{root}/ImageSets/Segmentation/train.txt", "\n".join(VOC_TRAIN).encode() + b"\n")
        add_bytes(tar, f"{root}/ImageSets/Segmentation/val.txt", "\n".join(VOC_VAL).encode() + b"\n")
        for image_id in VOC_TRAIN + VOC_VAL + ["2008_000002"]:  # 2008_000003 only in SBD img/
            add_bytes(tar, f"{root}/JPEGImages/{image_id}.jpg", jpeg_bytes(rand_image(rng)))
        for image_id in VOC_TRAIN + VOC_VAL:
            mask = rng.integers(0, 21, (32, 40)).astype(np.uint8)
            mask[0, :] = 255  # "void" border stays ignore
            masks[image_id] = mask
            add_bytes(tar, f"{root}/SegmentationClass/{image_id}.png", png_bytes(mask, palette))
    with tarfile.open(os.path.join(manual_dir, "benchmark.tgz"), "w:gz") as tar:
        root = "benchmark_RELEASE/dataset"
        add_bytes(tar, f"{root}/train.txt", "\n".join(SBD_TRAIN).encode() + b"\n")
        add_bytes(tar, f"{root}/val.txt", "\n".join(SBD_VAL).encode() + b"\n")
        add_bytes(tar, f"{root}/img/2008_000003.jpg", jpeg_bytes(rand_image(rng)))
        for image_id in SBD_TRAIN + SBD_VAL:
            mask = np.full((32, 40), 20, np.uint8) if image_id in masks else (
                rng.integers(0, 21, (32, 40)).astype(np.uint8))
            if image_id not in masks:
                masks[image_id] = mask
            buffer = io.BytesIO()
            scipy.io.savemat(buffer, {"GTcls": {"Segmentation": mask, "Boundaries": np.zeros((1, 1)),
                                                "CategoriesPresent": np.unique(mask)}})
            add_bytes(tar, f"{root}/cls/{image_id}.mat", buffer.getvalue())
    return masks


def test_voc_aug_builder_on_fake_archives(tmp_path):
    masks = make_fake_voc_aug(str(tmp_path / "manual"))
    data_dir = str(tmp_path / "tfds")
    train = data.load("voc_aug", "train", data_dir=data_dir, manual_dir=str(tmp_path / "manual"))
    val = data.load("voc_aug", "validation", data_dir=data_dir)
    builder = data.get_builder("voc_aug", data_dir=data_dir)
    ids = {split: sorted(ex["image_id"].decode() for ex in builder.as_dataset(split=split).as_numpy_iterator())
           for split in ("train", "validation")}
    assert ids["train"] == ["2007_000032", "2007_000039", "2008_000002", "2008_000003"]
    assert ids["validation"] == ["2007_000033"]
    for split in ("train", "validation"):
        for ex in builder.as_dataset(split=split).as_numpy_iterator():
            image_id = ex["image_id"].decode()
            np.testing.assert_array_equal(ex["label"][..., 0], masks[image_id], err_msg=image_id)
            assert ex["image"].shape == (32, 40, 3)
    labels = [ex["label"] for ex in train.as_numpy_iterator()]
    assert all(label.shape == (32, 40) for label in labels)
    assert sum((label == 255).sum() for label in labels) == 2 * 40  # borders of the 2 VOC masks
    assert data.validate_labels(val, 21, name="voc_aug") == 1


# --- Cityscapes (tfds builder, mocked) ---------------------------------------------------

# cityscapesScripts helpers/labels.py: labelId -> trainId (255 = ignore), ids 0..33.
CITYSCAPES_TRAIN_IDS = [255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255,
                        255, 5, 255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18]


def test_cityscapes_label_id_mapping_exhaustive():
    ids = np.arange(-1, 300, dtype=np.int32)
    got = data.cityscapes_label_ids_to_train_ids(tf.constant(ids)).numpy()
    expected = np.array([CITYSCAPES_TRAIN_IDS[i] if 0 <= i < 34 else 255 for i in ids], np.uint8)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.uint8
    uint8_ids = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(
        data.cityscapes_label_ids_to_train_ids(uint8_ids).numpy(), expected[1:257])
    assert sorted(set(expected.tolist()) - {255}) == list(range(19))


def test_cityscapes_pipeline_with_mock_data():
    label_ids = np.tile(np.arange(34, dtype=np.uint8), (8, 1))[:, :32][..., None]  # (8, 32, 1)

    def as_dataset_fn(builder, split, **kwargs):
        assert builder.name == "cityscapes" and split == "validation"
        example = {"image_id": "frankfurt_000000_000294",
                   "image_left": np.full((8, 32, 3), 100, np.uint8),
                   "segmentation_label": label_ids}
        return tf.data.Dataset.from_tensors(example).repeat(3)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset_fn):
        ds = data.load("cityscapes", "val")
        examples = list(ds.as_numpy_iterator())
    assert len(examples) == 3
    expected = np.array(CITYSCAPES_TRAIN_IDS[:32], np.uint8)
    np.testing.assert_array_equal(examples[0]["label"], np.tile(expected, (8, 1)))
    assert examples[0]["image"].shape == (8, 32, 3)
    info = data.dataset_info("cityscapes")
    pipeline = data.make_pipeline(ds, training=True, crop_size=(8, 16), batch_size=2, seed=0,
                                  num_classes=info.num_classes, name="cityscapes")
    images, labels = next(iter(pipeline))
    assert images.shape == (2, 8, 16, 3) and labels.shape == (2, 8, 16)
    assert set(np.unique(labels.numpy())) <= set(range(19)) | {255}


def test_cityscapes_without_manual_files_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="gtFine_trainvaltest.zip"):
        data.load("cityscapes", "train", data_dir=str(tmp_path), manual_dir=str(tmp_path / "nothing"))


# --- helpers and metadata ----------------------------------------------------------------


def test_reduce_zero_label():
    out = data.reduce_zero_label(tf.constant([0, 1, 2, 150], tf.uint8)).numpy()
    np.testing.assert_array_equal(out, [255, 0, 1, 149])


@pytest.mark.parametrize("name,num_classes", [("synthetic", 5), ("cityscapes", 19),
                                              ("ade20k", 150), ("voc_aug", 21),
                                              ("pascal_context", 59)])
def test_dataset_info(name, num_classes):
    info = data.dataset_info(name)
    assert info.num_classes == num_classes and len(info.class_names) == num_classes
    assert info.palette.shape == (num_classes, 3) and info.palette.dtype == np.uint8
    assert info.ignore_label == 255 and len(info.crop_size) == 2
    colours = info.colorize(np.array([[0, 255]]))
    assert colours.shape == (1, 2, 3) and (colours[0, 1] == 0).all()
    np.testing.assert_array_equal(colours[0, 0], info.palette[0])


def test_voc_palette_matches_voc_pngs():
    palette = voc_palette(256)
    assert palette[1].tolist() == [128, 0, 0] and palette[15].tolist() == [192, 128, 128]
    assert palette[255].tolist() == [224, 224, 192]


def test_unknown_dataset():
    with pytest.raises(ValueError, match="knows"):
        data.dataset_info("imagenet")
    with pytest.raises(ValueError, match="knows"):
        data.load("imagenet", "train")

"""Image files in and out: reading any image as RGB, colouring class maps, ``predict_files``.

``predict_files`` is the engine of ``keras-segattn predict``: it reads images (any size,
grayscale, RGBA, palette and 16-bit are converted to RGB uint8), skips and reports
unreadable files, and writes class-index PNGs, colour masks and overlays.
"""

import glob
import logging
import os

import numpy as np

from keras_segattn.inference.batching import fixed_input_size
from keras_segattn.inference.modes import DEFAULT_SCALES, check_options, predict_logits
from keras_segattn.inference.predictors import Predictor, load_predictor

logger = logging.getLogger("keras_segattn.inference")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


def load_image(path):
    """Read an image file as RGB uint8 ``(H, W, 3)``.

    Grayscale -> RGB, RGBA/LA -> RGB (alpha dropped), palette -> RGB, 16-bit (``I;16``,
    ``I``) scaled by 255/65535, float images in ``[0, 1]`` scaled by 255; EXIF rotation is
    applied. Raises ``ValueError`` naming the file when it can't be read.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image {path!r}: {error}") from error
    return to_rgb_uint8(image)


def to_rgb_uint8(image):
    """Convert a PIL image or NumPy array (any mode / bit depth) to RGB uint8."""
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            array = np.asarray(image)
        elif image.mode == "RGB":
            array = np.asarray(image)
        else:
            # L, LA, P, PA, RGBA, CMYK, YCbCr, 1, ... -> RGB (alpha dropped).
            if image.mode in ("P", "PA") and "transparency" in image.info:
                image = image.convert("RGBA")
            array = np.asarray(image.convert("RGB"))
    else:
        array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"expected an image (H, W[, C]), got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 2:  # gray + alpha
        array = np.repeat(array[..., :1], 3, axis=-1)
    elif array.shape[-1] >= 4:
        array = array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return array.astype("uint8") * 255
    if np.issubdtype(array.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(array)) <= 1.0 else 1.0
        return np.clip(np.round(np.nan_to_num(array) * scale), 0, 255).astype("uint8")
    # Integer images wider than 8 bits (16-bit PNG/TIFF): full range 0..65535 -> 0..255.
    array = array.astype("float64")
    max_value = 65535.0 if array.max() > 255 or array.dtype != np.uint8 else 255.0
    return np.clip(np.round(array * (255.0 / max_value)), 0, 255).astype("uint8")


def expand_inputs(inputs):
    """Expand files, folders (recursively, image extensions) and globs into a file list.

    Returns ``(files, missing)``: ``missing`` lists inputs that matched nothing (including
    folders without image files).
    """
    files, missing = [], []
    for item in inputs:
        item = os.path.expanduser(str(item))
        if os.path.isdir(item):
            found = []
            for root, _, names in os.walk(item):
                found.extend(
                    os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)
                )
            files.extend(sorted(found))
            if not found:  # a folder without images is an input that matched nothing
                missing.append(item)
        elif os.path.isfile(item):
            files.append(item)
        elif glob.has_magic(item):
            matched = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if matched:
                files.extend(matched)
            else:
                missing.append(item)
        else:
            missing.append(item)
    seen, unique = set(), []
    for f in files:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, missing


def colorize(classes, palette):
    """Class-index map ``(H, W)`` -> RGB uint8 with ``palette`` (``(K, 3)``); 255 is black."""
    palette = np.asarray(palette, "uint8").reshape(-1, 3)
    classes = np.asarray(classes)
    lut = np.zeros((max(256, int(classes.max(initial=0)) + 1), 3), "uint8")
    n = min(len(palette), len(lut))
    lut[:n] = palette[:n]
    if len(palette) < len(lut) - 1 and len(palette) < 255:
        # More classes than palette entries: repeat the palette (never happens for the
        # built-in palettes, which match their datasets).
        for k in range(len(palette), min(len(lut), 255)):
            lut[k] = palette[k % len(palette)]
    return lut[classes]


def overlay(image, color_mask, alpha=0.5):
    """Blend an RGB uint8 image with a colour mask: ``(1 - alpha) * image + alpha * mask``."""
    blended = (1.0 - alpha) * image.astype("float32") + alpha * color_mask.astype("float32")
    return np.clip(np.round(blended), 0, 255).astype("uint8")


def _progress(iterable, total, enabled):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    return tqdm(iterable, total=total, unit="img", desc="predict")


def predict_files(
    model,
    inputs,
    output_dir,
    palette="synthetic",
    mode="whole",
    crop_size=None,
    stride=None,
    scales=DEFAULT_SCALES,
    flip=False,
    alpha=0.5,
    save=("classes", "color", "overlay"),
    progress=True,
    scale=None,
):
    """Segment image files and write the results; the core of ``keras-segattn predict``.

    Args:
        model: a path (``.keras``, SavedModel dir, ``.tflite``), a Keras model or a
            :class:`Predictor`.
        inputs: list of image files, folders and/or glob patterns.
        output_dir: where ``<stem>_classes.png`` (class indices, uint8, or uint16 for more
            than 256 classes), ``<stem>_color.png`` and ``<stem>_overlay.png`` go.
        palette: a palette name (``cityscapes``, ``ade20k``, ``voc``, ``synthetic``) or a
            ``(K, 3)`` array.
        mode, crop_size, stride, scales, flip, scale: see :func:`predict_logits`.
        alpha: overlay opacity of the colour mask.
        save: which outputs to write.
        progress: show a tqdm progress bar.

    Returns:
        dict with ``"written"`` (list of ``{input, classes, color, overlay}``) and
        ``"failed"`` (list of ``(path, message)``). Unreadable files are logged at
        ``ERROR`` level (naming the file) and skipped; the batch goes on.
    """
    from PIL import Image

    from keras_segattn.palettes import get_palette

    check_options(mode, crop_size, stride, scales)  # before the model and any image
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"predict: alpha (the overlay's opacity) must be in [0, 1], got "
                         f"{alpha!r}")
    if isinstance(model, (str, os.PathLike)):
        model = load_predictor(os.fspath(model))
    if mode == "slide" and crop_size is None and fixed_input_size(model) is None:
        raise ValueError("predict: mode='slide' needs crop_size=(h, w) (CLI: --crop H W) for a "
                         "model that takes any image size")
    if isinstance(model, Predictor) and not model.has_logits:
        raise ValueError(
            f"predict: the {model.kind} model only outputs class maps; export it with "
            f"output='logits' or 'both' (CLI: --output both) to predict with it"
        )
    palette = get_palette(palette) if isinstance(palette, str) else np.asarray(palette, "uint8")
    files, missing = expand_inputs(inputs if isinstance(inputs, (list, tuple)) else [inputs])
    failed = [(m, f"folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
               if os.path.isdir(m) else "no such file, folder or glob match") for m in missing]
    for m in missing:
        logger.error("predict: input %r matched no file; skipped", m)
    if not files and not missing:
        logger.warning("predict: no input images")
    os.makedirs(output_dir, exist_ok=True)
    written, used_stems = [], set()
    for path in _progress(files, len(files), progress):
        try:
            image = load_image(path)
        except ValueError as error:
            logger.error("predict: skipping %s: %s", path, error)
            failed.append((path, str(error)))
            continue
        try:
            scores = predict_logits(
                model, image[None], mode=mode, crop_size=crop_size, stride=stride,
                scales=scales, flip=flip, scale=scale,
            )
        except Exception as error:  # noqa: BLE001 - report and go on with the batch
            logger.error("predict: inference failed on %s: %s", path, error)
            failed.append((path, f"inference failed: {error}"))
            continue
        classes = np.argmax(scores[0], axis=-1)
        stem = os.path.splitext(os.path.basename(path))[0]
        base, k = stem, 1
        while stem in used_stems:
            stem = f"{base}_{k}"
            k += 1
        used_stems.add(stem)
        record = {"input": path}
        if "classes" in save:
            dtype = "uint8" if scores.shape[-1] <= 256 else "uint16"
            record["classes"] = os.path.join(output_dir, f"{stem}_classes.png")
            Image.fromarray(classes.astype(dtype)).save(record["classes"])
        color = colorize(classes, palette)
        if "color" in save:
            record["color"] = os.path.join(output_dir, f"{stem}_color.png")
            Image.fromarray(color).save(record["color"])
        if "overlay" in save:
            record["overlay"] = os.path.join(output_dir, f"{stem}_overlay.png")
            Image.fromarray(overlay(image, color, alpha)).save(record["overlay"])
        written.append(record)
    return {"written": written, "failed": failed}

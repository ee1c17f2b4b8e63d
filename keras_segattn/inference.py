"""Inference helpers: whole-image, sliding-window and multi-scale + flip prediction.

``predict_logits`` follows mmsegmentation's test-time modes:

* ``"whole"``: one forward pass on the full image.
* ``"slide"``: a grid of ``crop_size`` windows with step ``stride``; the last window of each
  row/column is aligned to the image border (``y1 = max(min(y1 + crop, H) - crop, 0)``), the
  logits of overlapping windows are summed and divided by a count map, exactly like
  ``mmseg.models.segmentors.EncoderDecoder.slide_inference``. When the image is smaller
  than the crop, the window is the whole image; it is padded up to the crop size (and the
  logits cropped back) when the model needs a fixed input size, or with ``pad=True``.
* ``"multiscale"``: the image is resized by every factor in ``scales`` (optionally also
  flipped horizontally), run in ``whole`` or ``slide`` mode (``base_mode``), the outputs are
  resized back to the input size and averaged. Like mmseg's ``SegTTAModel`` the average is
  over softmax probabilities by default (``average="softmax"``); ``average="logits"``
  averages raw logits. ``flip=True`` also works with ``whole``/``slide``.

``model`` can be a Keras model (outputs a tensor, a list, or a dict with ``"logits"``), a
``Predictor`` from :func:`load_predictor` (``.keras`` file, SavedModel directory or
``.tflite``), or any callable mapping a float32 ``(B, H, W, 3)`` NumPy batch of RGB values
in ``[0, 255]`` to ``(B, H, W, C)`` logits. Everything here is NumPy + ``keras.ops`` and runs
on every backend.

``predict_files`` is the engine of ``keras-segattn predict``: it reads images (any size,
grayscale, RGBA, palette and 16-bit are converted to RGB uint8), skips and reports
unreadable files, and writes class-index PNGs, colour masks and overlays.
"""

import glob
import logging
import os

import numpy as np

from keras_segattn import validation

logger = logging.getLogger("keras_segattn.inference")

MODES = ("whole", "slide", "multiscale")
DEFAULT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


# --------------------------------------------------------------------------------------
# Forward pass of one batch
# --------------------------------------------------------------------------------------


def _select_logits(outputs):
    if isinstance(outputs, dict):
        if "logits" in outputs:
            return outputs["logits"]
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        raise ValueError(
            f"predict_logits: the model returns a dict without a 'logits' key "
            f"(keys {sorted(outputs)}); return the main logits under 'logits'."
        )
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def _batch_shards(shape):
    """``(layout, parts)``: how a JAX ``keras.distribution`` lays out a batch of ``shape``
    (``distribution.get_data_layout``) and over how many devices its batch axis is split.
    ``(None, 1)`` when no distribution is set, on the other backends (TF strategies and
    torch take care of their own placement) and in multi-process runs (each process then
    predicts its own batch)."""
    import keras

    if keras.backend.backend() != "jax":
        return None, 1
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None, 1
    import jax

    if jax.process_count() > 1:
        return None, 1
    layout = distribution.get_data_layout(tuple(shape))
    axis = layout.axes[0] if layout is not None and layout.axes else None
    if axis is None:
        return None, 1
    mesh = layout.device_mesh
    return layout, int(mesh.shape[list(mesh.axis_names).index(axis)])


def _variables_on_mesh(model, layout):
    """Whether ``model``'s variables live on the devices of ``layout`` (a model built before
    the distribution was set keeps them on one device; a batch sharded over other devices
    would then fail with "incompatible devices for jitted computation")."""
    devices = set(layout.backend_layout.device_set)
    for variable in model.weights[:1]:
        sharding = getattr(variable.value, "sharding", None)
        return sharding is not None and set(sharding.device_set) == devices
    return True


def data_parallel_size():
    """Devices a JAX ``keras.distribution`` splits a batch over in this process (1 when
    none is set, on TF/torch, or in a multi-process run)."""
    return _batch_shards((1, 1, 1, 1))[1]


def pad_batch(array, multiple):
    """Append copies of the last entry so that ``len(array)`` is a multiple of ``multiple``."""
    extra = -array.shape[0] % multiple
    if not extra:
        return array
    return np.concatenate([array, np.repeat(array[-1:], extra, axis=0)], axis=0)


def predict_on_batch(model, images):
    """``model.predict_on_batch(images)``, data-parallel under a JAX ``keras.distribution``.

    Keras' ``predict_on_batch`` (like calling the model) does not shard its input (only the
    ``fit``/``evaluate``/``predict`` data iterators do, Keras 3.15), so under
    ``DataParallel`` every device would run the whole batch. Here the batch is padded with
    copies of its last image to a multiple of the device count (sharding an indivisible
    batch raises ``IndivisibleError``, keras-team/keras#21167), placed with the
    distribution's data layout, and the padding rows are dropped from every output.
    Without a distribution (and on TF / torch), or for a model built before the
    distribution was set (its variables sit on one device), this is
    ``model.predict_on_batch``. (Under a TF ``MirroredStrategy``, Keras runs the whole
    batch on every replica and concatenates the copies; the trimming keeps the first.)

    Returns the model's outputs (a NumPy array, or a list / dict of them), ``len(images)``
    rows each.
    """
    import keras

    n = images.shape[0]
    layout, parts = _batch_shards(images.shape)
    inputs = images
    if parts > 1 and _variables_on_mesh(model, layout):
        padded = pad_batch(images, parts)
        layout = keras.distribution.distribution().get_data_layout(padded.shape)
        inputs = keras.distribution.distribute_tensor(padded, layout)
    outputs = model.predict_on_batch(inputs)
    return keras.tree.map_structure(lambda out: np.asarray(out)[:n], outputs)


def _forward(model, batch):
    """Run ``model`` on a float32 NumPy batch and return float32 NumPy logits.

    A Keras model under a JAX ``keras.distribution`` goes through :func:`predict_on_batch`
    (batch sharded over the devices, padded when it does not divide), like the whole-image
    path of :func:`keras_segattn.evaluation.evaluate`.
    """
    import keras

    if isinstance(model, keras.Model) and data_parallel_size() > 1:
        outputs = predict_on_batch(model, batch)
    elif isinstance(model, keras.Model) or isinstance(model, keras.layers.Layer):
        outputs = model(keras.ops.convert_to_tensor(batch), training=False)
    else:
        outputs = model(batch)
    logits = _select_logits(outputs)
    logits = keras.ops.convert_to_numpy(logits) if not isinstance(logits, np.ndarray) else logits
    return logits.astype("float32", copy=False)


def _fixed_input_size(model):
    """``(H, W)`` when the model only accepts one spatial size, else ``None``."""
    size = getattr(model, "input_size", None)
    if size is not None:
        return tuple(int(s) for s in size)
    shape = None
    try:
        inputs = getattr(model, "inputs", None)
        if inputs:
            shape = tuple(inputs[0].shape)
    except (AttributeError, ValueError):
        shape = None
    if shape is not None and len(shape) == 4 and shape[1] is not None and shape[2] is not None:
        return int(shape[1]), int(shape[2])
    return None


def _resize_numpy(array, size, interpolation="bilinear"):
    """Resize a ``(B, H, W, C)`` NumPy array with our PyTorch-exact resize."""
    import keras

    from keras_segattn.layers.resize import resize

    if tuple(array.shape[1:3]) == tuple(size):
        return array
    out = resize(keras.ops.convert_to_tensor(array.astype("float32")), tuple(int(s) for s in size), interpolation)
    return keras.ops.convert_to_numpy(out).astype("float32")


def _softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _pair(value, name):
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) <= 0:
        raise ValueError(f"predict_logits: {name} must be a positive int or (height, width), got {value!r}")
    return value


def _check_images(images):
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"predict_logits: expected RGB images of shape (B, H, W, 3) or (H, W, 3), got {images.shape}"
        )
    validation.check_image_array(images)  # NaN/Inf: one-line ValueError naming the image
    return images.astype("float32")


# --------------------------------------------------------------------------------------
# Whole / slide / multi-scale
# --------------------------------------------------------------------------------------


def slide_windows(image_size, crop_size, stride):
    """mmseg's sliding-window grid: a list of ``(y1, y2, x1, x2)`` boxes.

    ``h_grids = max(H - crop_h + stride_h - 1, 0) // stride_h + 1``; the last window of each
    axis is moved back so that it ends at the border. Windows are never larger than the
    image (an image smaller than the crop gives one window: the whole image).
    """
    height, width = image_size
    crop_h, crop_w = crop_size
    stride_h, stride_w = stride
    h_grids = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    w_grids = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    boxes = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * stride_h
            x1 = w_idx * stride_w
            y2 = min(y1 + crop_h, height)
            x2 = min(x1 + crop_w, width)
            y1 = max(y2 - crop_h, 0)
            x1 = max(x2 - crop_w, 0)
            boxes.append((y1, y2, x1, x2))
    return boxes


def _whole(model, images, fixed_size, pad_value):
    if fixed_size is not None and tuple(images.shape[1:3]) != tuple(fixed_size):
        # A fixed-size model (e.g. TFLite) on another size: slide with its size as crop.
        return _slide(model, images, fixed_size, fixed_size, None, True, pad_value)
    return _forward(model, images)


def _slide(model, images, crop_size, stride, num_classes, pad, pad_value):
    batch, height, width, _ = images.shape
    crop_size = _pair(crop_size, "crop_size")
    stride = _pair(stride, "stride") or crop_size
    preds = None
    count = np.zeros((1, height, width, 1), "float32")
    for y1, y2, x1, x2 in slide_windows((height, width), crop_size, stride):
        crop = images[:, y1:y2, x1:x2, :]
        h, w = crop.shape[1:3]
        if pad and (h < crop_size[0] or w < crop_size[1]):
            crop = np.pad(
                crop,
                ((0, 0), (0, crop_size[0] - h), (0, crop_size[1] - w), (0, 0)),
                constant_values=pad_value,
            )
        logits = _forward(model, crop)[:, :h, :w, :]
        if preds is None:
            channels = num_classes or logits.shape[-1]
            preds = np.zeros((batch, height, width, channels), "float32")
        preds[:, y1:y2, x1:x2, :] += logits
        count[:, y1:y2, x1:x2, :] += 1
    if (count == 0).any():  # pragma: no cover - the grid always covers the image
        raise RuntimeError("slide inference: some pixels were not covered by any window")
    return preds / count


def predict_logits(
    model,
    images,
    mode="whole",
    crop_size=None,
    stride=None,
    scales=DEFAULT_SCALES,
    flip=False,
    num_classes=None,
    average="softmax",
    base_mode=None,
    pad="auto",
    pad_value=0.0,
):
    """Segmentation scores for ``images`` at input resolution.

    Args:
        model: a Keras model, a :class:`Predictor`, or a callable ``(B, H, W, 3)`` float32
            RGB in ``[0, 255]`` -> ``(B, H, W, C)`` logits.
        images: ``(B, H, W, 3)`` or ``(H, W, 3)`` array, RGB values in ``[0, 255]`` (the
            models normalise inside).
        mode: ``"whole"``, ``"slide"`` or ``"multiscale"``.
        crop_size: ``(h, w)`` or int, window size for ``"slide"`` (required there).
        stride: ``(h, w)`` or int, window step; defaults to ``crop_size`` (no overlap).
        scales: resize factors for ``"multiscale"`` (mmseg: 0.5 ... 1.75).
        flip: also run the horizontally flipped image and average (any mode).
        num_classes: number of output channels (inferred from the first output if ``None``).
        average: ``"softmax"`` (mmseg TTA: mean of probabilities) or ``"logits"``; only
            used when several predictions are averaged (multiscale and/or flip).
        base_mode: ``"whole"`` or ``"slide"``, how each scale is run in ``"multiscale"``
            (default: ``"slide"`` when ``crop_size`` is given, else ``"whole"``).
        pad: pad windows smaller than ``crop_size`` (image smaller than the crop) up to the
            crop. ``"auto"``: only if the model has a fixed input size.
        pad_value: raw pixel value used for padding.

    Returns:
        float32 NumPy array ``(B, H, W, C)``: logits for a single prediction, the average
        of softmax probabilities (``average="softmax"``) or logits when several
        predictions are averaged. The argmax over the last axis is the class map.

    Example:
    >>> import keras
    >>> inp = keras.Input((None, None, 3))
    >>> model = keras.Model(inp, keras.layers.Conv2D(4, 1)(inp))
    >>> predict_logits(model, np.zeros((1, 20, 30, 3)), mode="slide", crop_size=16, stride=8).shape
    (1, 20, 30, 4)
    """
    if mode not in MODES:
        raise ValueError(f"predict_logits: mode must be one of {MODES}, got {mode!r}")
    if average not in ("softmax", "logits"):
        raise ValueError(f"predict_logits: average must be 'softmax' or 'logits', got {average!r}")
    images = _check_images(images)
    fixed_size = _fixed_input_size(model)
    crop_size = _pair(crop_size, "crop_size")
    stride = _pair(stride, "stride")
    if mode == "slide" and crop_size is None:
        if fixed_size is None:
            raise ValueError("predict_logits: mode='slide' needs crop_size=(h, w) (and optionally stride)")
        crop_size = fixed_size
    if pad == "auto":
        pad = fixed_size is not None
    if base_mode is None:
        base_mode = "slide" if (mode == "slide" or crop_size is not None) else "whole"
    elif base_mode not in ("whole", "slide"):
        raise ValueError(f"predict_logits: base_mode must be 'whole' or 'slide', got {base_mode!r}")
    if base_mode == "slide" and crop_size is None:
        raise ValueError("predict_logits: base_mode='slide' needs crop_size")

    def run_one(batch):
        if base_mode == "slide" or mode == "slide":
            return _slide(model, batch, crop_size, stride or crop_size, num_classes, pad, pad_value)
        return _whole(model, batch, fixed_size, pad_value)

    height, width = images.shape[1:3]
    if mode == "multiscale":
        from keras_segattn.layers.resize import scaled_size

        factors = tuple(float(s) for s in scales)
        if not factors or min(factors) <= 0:
            raise ValueError(f"predict_logits: scales must be positive numbers, got {scales!r}")
    else:
        factors = (1.0,)
    flips = (False, True) if flip else (False,)
    several = len(factors) * len(flips) > 1

    total = None
    for factor in factors:
        if factor == 1.0:
            scaled = images
        else:
            size = (scaled_size(height, factor), scaled_size(width, factor))
            scaled = _resize_numpy(images, size)
        for flipped in flips:
            batch = scaled[:, :, ::-1, :] if flipped else scaled
            out = run_one(np.ascontiguousarray(batch))
            if flipped:
                out = out[:, :, ::-1, :]
            out = _resize_numpy(np.ascontiguousarray(out), (height, width))
            if several and average == "softmax":
                out = _softmax(out)
            total = out if total is None else total + out
    if several:
        total = total / (len(factors) * len(flips))
    return total.astype("float32")


# --------------------------------------------------------------------------------------
# Loading models of every format
# --------------------------------------------------------------------------------------


class Predictor:
    """A uniform callable over a ``.keras`` model, a SavedModel directory or a ``.tflite``.

    ``predictor(images)`` takes float32 ``(B, H, W, 3)`` RGB in ``[0, 255]`` and returns
    float32 ``(B, H, W, C)`` logits (or a dict with ``"classes"`` when the export has no
    logits). ``input_size`` is ``(H, W)`` for fixed-size models (TFLite), else ``None``.
    """

    def __init__(self, fn, input_size=None, kind="keras", has_logits=True):
        self._fn = fn
        self.input_size = input_size
        self.kind = kind
        self.has_logits = has_logits

    def __call__(self, images):
        return self._fn(np.asarray(images, "float32"))


def _keras_inference_model(model):
    """The single-output inference model of a segmentation model (or the model itself)."""
    for name in ("inference_model", "get_inference_model", "build_inference_model", "export_model"):
        method = getattr(model, name, None)
        if callable(method):
            try:
                return method()
            except TypeError:
                continue
    return model


def load_predictor(path):
    """Load a ``.keras`` file, a SavedModel directory or a ``.tflite`` file as a ``Predictor``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_predictor: no model at {path!r}")
    if os.path.isdir(path):
        return _saved_model_predictor(path)
    if path.endswith(".tflite"):
        return _tflite_predictor(path)
    if path.endswith(".keras") or path.endswith(".h5"):
        import keras

        import keras_segattn  # noqa: F401  (registers custom layers)

        try:
            import keras_segattn.models  # noqa: F401
        except ImportError:  # pragma: no cover
            pass
        model = keras.saving.load_model(path, compile=False)
        return Predictor(lambda x: _forward(model, x), _fixed_input_size(model), "keras")
    raise ValueError(
        f"load_predictor: don't know how to load {path!r}; expected a .keras file, a "
        f"SavedModel directory or a .tflite file"
    )


def _saved_model_predictor(path):
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    names = list(loaded.signatures.keys())
    fn = None
    for name in ("serve", "serving_default"):
        if name in loaded.signatures:
            fn = loaded.signatures[name]
            break
    if fn is None:
        if not names:
            raise ValueError(f"SavedModel {path!r} has no serving signature")
        fn = loaded.signatures[names[0]]
    input_name, input_spec = next(iter(fn.structured_input_signature[1].items()))
    shape = input_spec.shape
    input_size = None
    if shape.rank == 4 and shape[1] is not None and shape[2] is not None:
        input_size = (int(shape[1]), int(shape[2]))
    output_keys = sorted(fn.structured_outputs)
    has_logits = "logits" in output_keys or len(output_keys) == 1 and output_keys[0] != "classes"

    def call(x):
        _ = loaded  # keep a reference: the signature needs the loaded variables alive
        out = fn(**{input_name: tf.constant(x, dtype=input_spec.dtype)})
        out = {k: v.numpy() for k, v in out.items()}
        if "logits" in out:
            return out["logits"].astype("float32")
        if len(out) == 1 and "classes" not in out:
            return next(iter(out.values())).astype("float32")
        return out

    return Predictor(call, input_size, "saved_model", has_logits)


def tflite_interpreter(model_path=None, model_content=None):
    """``ai_edge_litert.interpreter.Interpreter`` if installed, else ``tf.lite.Interpreter``."""
    kwargs = {"model_path": model_path} if model_path is not None else {"model_content": model_content}
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(**kwargs)
    else:
        interpreter = Interpreter(**kwargs)
    interpreter.allocate_tensors()
    return interpreter


def _quantize_input(x, detail):
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        scale, zero_point = detail["quantization"]
        if scale:
            x = np.round(x / scale + zero_point)
        info = np.iinfo(dtype)
        x = np.clip(x, info.min, info.max)
    return x.astype(dtype)


def _dequantize_output(y, detail):
    scale, zero_point = detail["quantization"]
    if scale and np.issubdtype(detail["dtype"], np.integer) and y.ndim == 4:
        y = (y.astype("float32") - zero_point) * scale
    return y


def run_tflite(interpreter, images):
    """Run a TFLite interpreter on float32 ``(B, H, W, 3)`` images; returns ``{name: array}``.

    Uses the model's signature (output names ``"logits"``/``"classes"`` for our exports)
    when it has one. Quantized inputs are quantized with the tensor's scale/zero point and
    quantized 4-D outputs dequantized, so int8 models are called like float ones. Batch
    entries run one at a time (the exports have batch size 1).
    """
    signatures = interpreter.get_signature_list() if hasattr(interpreter, "get_signature_list") else {}
    results = {}
    if signatures:
        key = "serve" if "serve" in signatures else next(iter(signatures))
        runner = interpreter.get_signature_runner(key)
        input_name, input_detail = next(iter(runner.get_input_details().items()))
        output_details = runner.get_output_details()
        for image in np.asarray(images, "float32"):
            out = runner(**{input_name: _quantize_input(image[None], input_detail)})
            for name, y in out.items():
                results.setdefault(name, []).append(_dequantize_output(y, output_details[name]))
    else:
        input_detail = interpreter.get_input_details()[0]
        output_details = interpreter.get_output_details()
        for image in np.asarray(images, "float32"):
            interpreter.set_tensor(input_detail["index"], _quantize_input(image[None], input_detail))
            interpreter.invoke()
            for d in output_details:
                y = interpreter.get_tensor(d["index"])
                results.setdefault(d["name"], []).append(_dequantize_output(y, d))
    return {k: np.concatenate(v, axis=0) for k, v in results.items()}


def _tflite_output_roles(outputs):
    """Map output names to ``"logits"``/``"classes"`` (by name, else by rank)."""
    roles = {}
    for name, y in outputs.items():
        if "class" in name:
            roles[name] = "classes"
        elif "logit" in name:
            roles[name] = "logits"
        else:
            roles[name] = "logits" if y.ndim == 4 else "classes"
    return roles


def _tflite_predictor(path):
    interpreter = tflite_interpreter(model_path=path)
    detail = interpreter.get_input_details()[0]
    shape = detail["shape"]
    input_size = (int(shape[1]), int(shape[2]))
    probe = run_tflite(interpreter, np.zeros((1, *input_size, 3), "float32"))
    roles = _tflite_output_roles(probe)
    has_logits = "logits" in roles.values()

    def call(x):
        out = run_tflite(interpreter, x)
        named = {roles[k]: v for k, v in out.items()}
        if "logits" in named:
            return named["logits"].astype("float32")
        return named

    return Predictor(call, input_size, "tflite", has_logits)


# --------------------------------------------------------------------------------------
# Image files
# --------------------------------------------------------------------------------------


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
        mode, crop_size, stride, scales, flip: see :func:`predict_logits`.
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

    if isinstance(model, (str, os.PathLike)):
        model = load_predictor(os.fspath(model))
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
                scales=scales, flip=flip,
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

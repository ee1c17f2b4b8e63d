"""Export segmentation models to TensorFlow SavedModel, TFLite (LiteRT) and ONNX.

=================  ============================  ==========================  ===================
format             TensorFlow backend            JAX backend                 PyTorch backend
=================  ============================  ==========================  ===================
``saved_model``    any H, W (``input_size=None``) fixed ``input_size`` (jax2tf) not supported
``tflite``         fixed size; fp32/fp16/int8    fixed size; fp32/fp16/int8  not supported
``onnx``           needs ``tf2onnx``             needs ``jax2onnx``          fixed size
=================  ============================  ==========================  ===================

All exports take RGB images with values in ``[0, 255]`` (the model normalises inside) and
return, at the input resolution, ``"logits"`` (float32 ``(B, H, W, C)``), ``"classes"``
(int32 ``(B, H, W)``) or both (``output=``).

* SavedModel signatures: ``serve`` / ``serving_default`` (float32 images) and
  ``serve_uint8`` (uint8 images). With ``input_size=None`` (TF backend) height and width
  are free: the library's ``Resize`` layer works with unknown sizes (stack notes #1).
* TFLite: one fixed size, batch 1. ``quantization=None`` (float32), ``"float16"`` (weights
  in fp16) or ``"int8"`` (full integer: int8 weights and activations, calibrated on
  ``representative_data`` or the built-in synthetic dataset; uint8 image input, int8
  logits output; dequantize with the output's scale/zero point, as
  :func:`keras_segattn.inference.run_tflite` does). Only TFLite builtin ops are allowed;
  the exporter fails if a Flex (select-TF) op would be needed.
* ONNX (torch): a fixed spatial size and batch size 1. Torch traces ``None`` sizes as 1
  and silently produces a wrong graph (stack notes #8), so ``input_size`` is required. The
  result is checked against the Keras model with onnxruntime when it is installed.
"""

import os
import shutil
import tempfile

import numpy as np

FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZATIONS = (None, "float16", "int8")
OUTPUTS = ("logits", "classes", "both")


def _backend():
    import keras

    return keras.backend.backend()


def _check_input_size(input_size):
    if input_size is None:
        return None
    try:
        size = tuple(int(s) for s in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"export: input_size must be (height, width) ints, got {input_size!r}") from None
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"export: input_size must be two positive ints (height, width), got {input_size!r}")
    return size


def _argmax(logits):
    """int32 class map. On TF, ``tf.argmax`` directly: ``keras.ops.argmax`` adds a
    negative-zero fix-up (``tf.BitwiseAnd``) that is not a TFLite builtin (needs Flex)."""
    from keras import ops

    if _backend() == "tensorflow":
        import tensorflow as tf

        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    return ops.cast(ops.argmax(logits, axis=-1), "int32")


def serving_fn(model, output="logits"):
    """``images -> {"logits": ..., "classes": ...}`` for the inference part of ``model``."""
    from keras import ops

    from keras_segattn.inference import inference_model, select_logits

    if output not in OUTPUTS:
        raise ValueError(f"export: output must be one of {OUTPUTS}, got {output!r}")
    inference = inference_model(model)

    def forward(images):
        images = ops.cast(images, "float32")
        logits = ops.cast(select_logits(inference(images, training=False)), "float32")
        result = {}
        if output in ("logits", "both"):
            result["logits"] = logits
        if output in ("classes", "both"):
            result["classes"] = _argmax(logits)
        return result

    return inference, forward


# --------------------------------------------------------------------------------------
# SavedModel
# --------------------------------------------------------------------------------------


def _write_saved_model(model, path, input_size, output, batch_size=None, uint8_endpoint=True,
                       jax2tf_kwargs=None):
    import keras
    import tensorflow as tf

    backend = _backend()
    if backend not in ("tensorflow", "jax"):
        raise ValueError(
            f"export: SavedModel/TFLite export needs the TensorFlow or JAX backend; the current "
            f"Keras backend is {backend!r}. Use format='onnx' on torch, or set "
            f"KERAS_BACKEND=tensorflow and re-load the .keras file."
        )
    if backend == "jax" and input_size is None:
        raise ValueError(
            "export: the JAX backend can't export a SavedModel with free height/width "
            "(jax2tf shape polymorphism fails on strided/dilated convolutions). Pass "
            "input_size=(height, width), or export with KERAS_BACKEND=tensorflow for any size."
        )
    inference, forward = serving_fn(model, output)
    height, width = input_size if input_size is not None else (None, None)
    kwargs = {}
    if backend == "jax":
        kwargs["jax2tf_kwargs"] = dict(jax2tf_kwargs or {"native_serialization": False})
    archive = keras.export.ExportArchive()
    archive.track(inference)
    archive.add_endpoint(
        "serve", forward,
        input_signature=[tf.TensorSpec((batch_size, height, width, 3), tf.float32, name="images")],
        **kwargs,
    )
    if uint8_endpoint:
        archive.add_endpoint(
            "serve_uint8", lambda images: forward(images),
            input_signature=[tf.TensorSpec((batch_size, height, width, 3), tf.uint8, name="images")],
            **kwargs,
        )
    archive.write_out(path, verbose=False)
    return path


# --------------------------------------------------------------------------------------
# TFLite
# --------------------------------------------------------------------------------------


def _representative_images(representative_data, input_size, num_samples):
    """Yield float32 ``(1, H, W, 3)`` calibration images resized to ``input_size``."""
    import tensorflow as tf

    if representative_data is None:
        try:
            from keras_segattn import data as _data

            representative_data = _data.load("synthetic", "train")
        except Exception as error:  # noqa: BLE001
            raise ValueError(
                "export: int8 quantization needs representative images: pass "
                "representative_data=<iterable of (H, W, 3) images or (B, H, W, 3) batches, or a "
                f"tf.data.Dataset>; the built-in synthetic dataset could not be loaded ({error})"
            ) from error
    count = 0
    for element in representative_data:
        if isinstance(element, dict):
            for key in ("images", "image", "inputs"):
                if key in element:
                    element = element[key]
                    break
            else:
                raise ValueError(f"export: representative dict element without 'images': {sorted(element)}")
        elif isinstance(element, (tuple, list)):
            element = element[0]
        images = np.asarray(element.numpy() if hasattr(element, "numpy") else element, "float32")
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"export: representative images must be (H, W, 3) RGB, got {images.shape}")
        for image in images:
            if tuple(image.shape[:2]) != tuple(input_size):
                image = tf.image.resize(image, input_size).numpy()
            yield [image[None].astype("float32")]
            count += 1
            if count >= num_samples:
                return


def tflite_ops(model_path=None, model_content=None):
    """Sorted set of op names of a TFLite model (``"Flex..."`` ones need select TF ops)."""
    from keras_segattn.inference import tflite_interpreter

    interpreter = tflite_interpreter(model_path=model_path, model_content=model_content)
    return sorted({d["op_name"] for d in interpreter._get_ops_details()})


def _write_tflite(model, path, input_size, quantization, representative_data, output,
                  num_calibration_samples):
    import tensorflow as tf

    tmp = tempfile.mkdtemp(prefix="segattn_tflite_")
    try:
        saved = _write_saved_model(model, os.path.join(tmp, "sm"), input_size, output,
                                   batch_size=1, uint8_endpoint=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serve"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            samples = list(_representative_images(representative_data, input_size, num_calibration_samples))
            if not samples:
                raise ValueError("export: representative_data yielded no images")
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: iter(samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            if output in ("logits", "both"):
                converter.inference_output_type = tf.int8
        try:
            content = converter.convert()
        except Exception as error:  # noqa: BLE001 - ConverterError has no stable import path
            if _backend() == "jax" and "ui32" in str(error):
                raise ValueError(
                    "export: TFLite conversion from the JAX backend fails for models with "
                    "random-number state (Dropout's uint32 SeedGenerator variables are exported "
                    "by jax2tf and TFLite has no uint32 variables). Export this model with "
                    "KERAS_BACKEND=tensorflow (load the .keras file there)."
                ) from error
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    flex = [op for op in tflite_ops(model_content=content) if op.lower().startswith("flex")]
    if flex:  # pragma: no cover - supported_ops already forbids them
        raise RuntimeError(f"export: the TFLite model needs Flex (select TF) ops {flex}; not exported")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    return path


# --------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------


class _OnnxFriendlyTake:
    """Context manager: on torch, ``keras.ops.take`` with a 1-D index without the
    ``.squeeze(axis)`` that keras 3.15 appends to ``index_select``.

    That squeeze is a no-op in eager torch but the dynamo ONNX exporter writes it as an ONNX
    ``Squeeze`` of a dimension that isn't 1, and onnxruntime refuses the model
    ("Op (Squeeze) [ShapeInferenceError] Dimension of input 1 must be 1"). Our Resize layer
    gathers rows/columns with ``ops.take``.
    """

    def __enter__(self):
        from keras.src.backend.torch import numpy as torch_numpy

        self._module = torch_numpy
        self._original = torch_numpy.take
        original = self._original

        def take(x, indices, axis=None):
            import torch

            x = torch_numpy.convert_to_tensor(x)
            indices = torch_numpy.convert_to_tensor(indices)
            if axis is None or indices.ndim != 1 or x.ndim == 2 and axis == 0:
                return original(x, indices, axis=axis)
            axis = axis % x.ndim
            indices = indices.long()
            indices = torch.where(indices < 0, indices + x.shape[axis], indices)
            return torch.index_select(x, dim=axis, index=indices)

        torch_numpy.take = take
        return self

    def __exit__(self, *exc):
        self._module.take = self._original
        return False


def _write_onnx(model, path, input_size, output, verify):
    import keras

    backend = _backend()
    if backend == "torch" and input_size is None:
        raise ValueError(
            "export: ONNX on the torch backend needs a fixed input_size=(height, width) "
            "(CLI: --input-size H W). Torch traces unknown height/width as 1 and the graph "
            "it writes gives wrong results at other sizes (keras 3.15)."
        )
    if backend == "tensorflow":
        import importlib.util

        if importlib.util.find_spec("tf2onnx") is None:
            raise ValueError(
                "export: ONNX export on the TensorFlow backend needs `tf2onnx` (pip install "
                "tf2onnx); or export with KERAS_BACKEND=torch and a fixed input_size."
            )
    if backend == "jax":
        import importlib.util

        if importlib.util.find_spec("jax2onnx") is None:
            raise ValueError(
                "export: ONNX export on the JAX backend needs `jax2onnx`; or export with "
                "KERAS_BACKEND=torch and a fixed input_size."
            )
    import contextlib

    _, forward = serving_fn(model, output)
    height, width = input_size if input_size is not None else (None, None)
    patch = _OnnxFriendlyTake() if backend == "torch" else contextlib.nullcontext()
    with patch:
        return _write_onnx_traced(forward, path, height, width, input_size, verify)


def _write_onnx_traced(forward, path, height, width, input_size, verify):
    import keras

    # Batch 1: a static signature makes keras use torch's dynamo exporter; with a dynamic
    # batch it falls back to the TorchScript exporter, which can't export the
    # ``index_select``/``ravel`` of our Resize layer ("aten::ravel not supported").
    inputs = keras.Input((height, width, 3), batch_size=1, name="images")
    wrapper = keras.Model(inputs, forward(inputs), name="segattn_export")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    wrapper.export(
        path, format="onnx", verbose=False,
        input_signature=[keras.InputSpec(shape=(1, height, width, 3), dtype="float32", name="images")],
    )
    _rename_onnx_outputs(path)
    if verify:
        _verify_onnx(wrapper, path, input_size or (32, 32))
    return path


def _rename_onnx_outputs(path):
    """Name the graph outputs ``logits`` (4-D) and ``classes`` (3-D) (torch names them
    after the last op, e.g. ``add_13``)."""
    try:
        import onnx
    except ImportError:  # pragma: no cover
        return
    proto = onnx.load(path)
    graph = proto.graph
    renames = {}
    for value in graph.output:
        rank = len(value.type.tensor_type.shape.dim)
        new = {4: "logits", 3: "classes"}.get(rank)
        if new and new not in renames.values():
            renames[value.name] = new
    if not renames:
        return
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    for value in list(graph.output) + list(graph.value_info):
        if value.name in renames:
            value.name = renames[value.name]
    onnx.save(proto, path)


def run_onnx(path, images):
    """Run an exported ONNX model with onnxruntime: ``{output_name: array}``."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {name: np.asarray(images, "float32")})))


def _verify_onnx(wrapper, path, input_size, atol=1e-4):
    import importlib.util

    import keras

    if importlib.util.find_spec("onnxruntime") is None:
        return
    x = np.random.default_rng(0).uniform(0, 255, (1, *input_size, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(wrapper(x)["logits"]) if "logits" in wrapper.output else None
    if expected is None:
        return
    outputs = run_onnx(path, x)
    got = next((v for v in outputs.values() if v.ndim == 4), None)
    if got is None:
        return
    diff = float(np.abs(got - expected).max())
    if not diff <= atol * max(1.0, float(np.abs(expected).max())):
        raise RuntimeError(f"export: the ONNX model at {path!r} disagrees with Keras (max |diff| {diff:.3g})")


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------


def check_options(format="saved_model", input_size=None, quantization=None, output="logits"):
    """:func:`export`'s options checked before any model is loaded or calibration data is
    read (``keras-segattn export`` fails in one line first); returns ``input_size`` as a
    pair or ``None``."""
    if format not in FORMATS:
        raise ValueError(f"export: format must be one of {FORMATS}, got {format!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"export: quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization is not None and format != "tflite":
        raise ValueError(f"export: quantization={quantization!r} is only supported for format='tflite'")
    if output not in OUTPUTS:
        raise ValueError(f"export: output must be one of {OUTPUTS}, got {output!r}")
    input_size = _check_input_size(input_size)
    if format == "tflite" and input_size is None:
        raise ValueError(
            "export: TFLite needs a fixed input size: pass input_size=(height, width) "
            "(CLI: --input-size H W). Use keras_segattn.inference.predict_logits(mode='slide') "
            "to run it on larger images."
        )
    return input_size


def export(model, path, format="saved_model", input_size=None, quantization=None,
           representative_data=None, output="logits", num_calibration_samples=32, verify=True):
    """Export a segmentation model for deployment.

    Args:
        model: a ``keras_segattn`` model (its ``inference_model()`` is used), or any Keras
            model mapping RGB ``[0, 255]`` images to logits (tensor, list or dict with
            ``"logits"``). A path to a ``.keras`` file is loaded first.
        path: output directory (SavedModel) or file (``.tflite``, ``.onnx``).
        format: ``"saved_model"``, ``"tflite"`` or ``"onnx"``.
        input_size: ``None`` (free height/width; SavedModel on TF only) or ``(H, W)``.
            Required for TFLite and for ONNX on torch.
        quantization: ``None``, ``"float16"`` or ``"int8"`` (TFLite only).
        representative_data: int8 calibration images: an iterable of ``(H, W, 3)`` images,
            ``(B, H, W, 3)`` batches, ``(images, labels)`` tuples or ``{"images": ...}``
            dicts (e.g. a ``tf.data.Dataset``). Default: the built-in synthetic dataset.
        output: ``"logits"``, ``"classes"`` or ``"both"``.
        num_calibration_samples: images used for int8 calibration.
        verify: ONNX only: compare with the Keras model using onnxruntime (if installed).

    Returns:
        ``path``.

    Example:
    >>> export(model, "model_sm")                                   # doctest: +SKIP
    >>> export(model, "model.tflite", "tflite", input_size=(512, 512),
    ...        quantization="int8")                                 # doctest: +SKIP
    """
    input_size = check_options(format, input_size, quantization, output)
    if isinstance(model, (str, os.PathLike)):
        import keras

        import keras_segattn.models  # noqa: F401  (registers the model classes)

        model = keras.saving.load_model(os.fspath(model), compile=False)
    path = os.fspath(path)
    if format == "saved_model":
        return _write_saved_model(model, path, input_size, output)
    if format == "tflite":
        return _write_tflite(model, path, input_size, quantization, representative_data, output,
                             num_calibration_samples)
    return _write_onnx(model, path, input_size, output, verify)

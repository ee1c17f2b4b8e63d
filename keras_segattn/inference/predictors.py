"""Loading exported models of every format as one callable: ``load_predictor``.

``Predictor`` wraps a ``.keras`` model, a SavedModel directory or a ``.tflite`` file (run by
``run_tflite`` with int8 (de)quantisation) as ``images -> logits``.
"""

import os

import numpy as np

from keras_segattn.inference.batching import fixed_input_size, forward


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
        return Predictor(lambda x: forward(model, x), fixed_input_size(model), "keras")
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

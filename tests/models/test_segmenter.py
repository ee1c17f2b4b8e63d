"""``Segmenter``: any backbone x any decode head (+ auxiliary heads), end to end."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_segattn import backbones, heads, models
from keras_segattn.testing import assert_allclose

from model_checks import images, labels

BACKEND = keras.backend.backend()
NUM_CLASSES = 3


def composition():
    """The issue's example at test size: criss-cross head on a V1c ResNet, FCN auxiliary
    head, and a second auxiliary head on stage 2."""
    return models.Segmenter(
        backbone=backbones.get_backbone("resnet_tiny_v1c", output_stride=8),
        decode_head=heads.CCHead(NUM_CLASSES, recurrence=2, channels=16, name="head"),
        auxiliary_heads=[
            heads.auxiliary_fcn_head(NUM_CLASSES, channels=8),
            heads.FCNHead(NUM_CLASSES, channels=8, num_convs=1, concat_input=False,
                          in_levels="P3", output_names="aux_stage2", loss_weights=0.2,
                          name="aux_stage2_head"),
        ],
    )


def test_fit_save_load_export(tmp_path):
    model = composition()
    assert model.segmentation_output_names == ["aux", "aux_stage2", "logits"]
    assert model.default_loss_weights == {"logits": 1.0, "aux": 0.4, "aux_stage2": 0.2}
    assert [layer.name for layer in model.layers][:3] == ["images", "normalize", "backbone"]
    model.compile(steps=10)
    history = model.fit(images(), labels(NUM_CLASSES), batch_size=2, epochs=1, verbose=0)
    for name in ("loss", "logits_loss", "aux_loss", "aux_stage2_loss", "logits_mean_iou"):
        assert np.isfinite(history.history[name][-1]), name

    x = images(batch=1, height=40, width=56, seed=3)
    predicted = model.predict(x, verbose=0)
    assert predicted.shape == (1, 40, 56, NUM_CLASSES) and predicted.dtype == np.float32
    path = str(tmp_path / "segmenter.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is models.Segmenter
    assert restored.compiled and restored.get_compile_config() == model.get_compile_config()
    assert isinstance(restored.decode_head, heads.CCHead)
    assert [type(h) for h in restored.auxiliary_heads] == [heads.FCNHead, heads.FCNHead]
    # (equal as saved: the heads' build shapes are tuples before and lists after a save)
    assert json.loads(json.dumps(restored.get_config())) == json.loads(json.dumps(
        model.get_config()))
    for saved, loaded in zip(model.weights, restored.weights):
        assert saved.path == loaded.path
        assert_allclose(loaded, saved, atol=0, rtol=0, err_msg=saved.path)
    assert_allclose(restored.predict(x, verbose=0), predicted, atol=1e-5, rtol=1e-5)
    # The optimizer state came back too: training continues from the same iteration.
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == 1

    from keras_segattn.export import export
    from keras_segattn.inference import load_predictor

    if BACKEND == "torch":  # SavedModel needs TF or JAX; the torch backend exports ONNX
        pytest.importorskip("onnxruntime")
        from keras_segattn.export import run_onnx

        out = export(restored, str(tmp_path / "m.onnx"), "onnx", input_size=(40, 56))
        assert_allclose(run_onnx(out, x)["logits"], predicted, atol=1e-4, rtol=1e-4)
    else:
        size = None if BACKEND == "tensorflow" else (40, 56)
        out = export(restored, str(tmp_path / "saved_model"), input_size=size)
        assert_allclose(load_predictor(out)(x), predicted, atol=1e-4, rtol=1e-4)


def test_mmseg_mapping_of_a_composition():
    """The whole-model mmseg mapping is the backbone's plus each head's, under mmseg's
    prefixes (several auxiliary heads: mmseg's ModuleList ``auxiliary_head.<i>``)."""
    model = models.Segmenter(
        backbone=backbones.get_backbone("resnet_tiny_v1c", output_stride=8),
        decode_head=heads.DANetHead(NUM_CLASSES, name="head"),
        auxiliary_heads=[heads.auxiliary_fcn_head(NUM_CLASSES, channels=8),
                         heads.NLHead(NUM_CLASSES, channels=16, in_levels="P3",
                                      output_names="aux2", name="aux2_head")],
    )
    mapping = model.reference_weight_mapping()
    assert {k.split(".")[0] for k in mapping} == {"backbone", "decode_head", "auxiliary_head"}
    assert "decode_head.pam.gamma.scale" in mapping
    assert "auxiliary_head.0.convs.0.conv.weight" in mapping
    assert "auxiliary_head.1.nl_block.g.conv.weight" in mapping
    assert len({id(v) for v, _ in mapping.values()}) == len(model.weights)
    other = models.Segmenter(
        backbone=backbones.get_backbone("resnet_tiny_v1c", output_stride=8),
        decode_head=heads.EANetHead(NUM_CLASSES, channels=16, key_channels=8,
                                    value_channels=16, num_heads=2, name="head"))
    with pytest.raises(ValueError, match="no mmsegmentation counterpart for its decode_head "
                                         r"\(EANetHead\)"):
        other.reference_weight_mapping()


def test_errors():
    backbone = backbones.get_backbone("resnet_tiny")
    head = heads.FCNHead(NUM_CLASSES, channels=8, name="head")
    with pytest.raises(ValueError, match=r"output names \['aux'\] are used by more than one"):
        models.Segmenter(backbone, head, [heads.auxiliary_fcn_head(NUM_CLASSES, channels=8),
                                          heads.auxiliary_fcn_head(NUM_CLASSES, channels=8,
                                                                   name="aux2")])
    with pytest.raises(ValueError, match="auxiliary head 'aux_head' has num_classes=4"):
        models.Segmenter(backbone, head, [heads.auxiliary_fcn_head(4, channels=8)])
    with pytest.raises(ValueError, match="the decode head must have a 'logits' output"):
        models.Segmenter(backbone, heads.FCNHead(3, output_names="aux"))
    with pytest.raises(TypeError, match="must be keras_segattn.heads heads"):
        models.Segmenter(backbone, keras.layers.Conv2D(3, 1))


@pytest.mark.parametrize("name", models.list_models())
def test_named_models_reject_bad_num_classes_in_one_line(name):
    for value in (0, -3, 2.5, "19", None):
        with pytest.raises(ValueError) as error:
            models.get(name, num_classes=value, backbone="resnet_tiny")
        assert str(error.value) == (
            f"{name}: num_classes must be a positive integer, got {value!r}.")


@pytest.mark.parametrize("name", models.list_models())
def test_named_models_refuse_unknown_keywords(name):
    """Keras' functional Model ignores keywords it does not know: ``output_strid=16`` built
    an OS8 model without a word."""
    with pytest.raises(TypeError) as error:
        models.get(name, num_classes=3, backbone="resnet_tiny", output_strid=16)
    message = str(error.value)
    assert message.startswith(f"{name}: unknown argument 'output_strid' (did you mean "
                              "'output_stride'?); it takes num_classes, backbone, "
                              "output_stride, aux_head, input_shape,"), message
    assert message.endswith(", name, trainable.")


def test_segmenter_refuses_unknown_keywords_and_keeps_name_and_trainable():
    backbone = backbones.get_backbone("resnet_tiny")
    head = heads.FCNHead(NUM_CLASSES, channels=8, name="head")
    with pytest.raises(TypeError) as error:
        models.Segmenter(backbone, head, aux_heads=[])
    assert str(error.value) == (
        "Segmenter: unknown argument 'aux_heads' (did you mean 'auxiliary_heads'?); it takes "
        "backbone, decode_head, auxiliary_heads, input_shape, align_corners, name, trainable.")
    model = models.Segmenter(backbone, head, name="mine", trainable=False)
    assert model.name == "mine" and not model.trainable


def _masked_cross_entropy(logits, y, weights):
    """sum over the pixels that are not 255 of CE * weight / their count (Keras'
    ``ignore_class`` reduction; mmseg's ``avg_non_ignore``), float64 NumPy."""
    logits = np.asarray(logits, "float64")
    logits = logits - logits.max(-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = y != 255
    ce = -np.take_along_axis(log_p, np.where(valid, y, 0)[..., None], -1)[..., 0]
    return float((ce * weights * valid).sum() / valid.sum())


def _fits_from_one_start(model):
    """``fit(**data) -> losses`` of ``model``, each fit from its state as it is now: weights,
    optimizer state and seed states restored before each, so that the fits of one compiled
    model (traced once per input structure) compare as fits of fresh identical models."""
    model.optimizer.build(model.trainable_variables)
    state = list(model.variables) + list(model.optimizer.variables)
    start = [keras.ops.convert_to_numpy(v) for v in state]

    def fit(**data):
        for variable, value in zip(state, start):
            variable.assign(value)
        return model.fit(epochs=2, verbose=0, shuffle=False, **data).history["loss"]

    return fit


def test_sample_weights_per_pixel_and_per_image():
    """fit/evaluate(sample_weight=...) on a model with several outputs. Before: torch failed
    in backward ('modified by an inplace operation': Keras' masked loss multiplies the
    weight in place, and one tensor was shared by the outputs), TensorFlow's XLA step failed,
    and per-image (B,) weights failed on every backend."""
    model = models.FCN(NUM_CLASSES, backbone="resnet_tiny", channels=8, aux_channels=8)
    model.compile(steps=10, metrics=[])
    rng = np.random.default_rng(0)
    x = images(4)
    y = labels(NUM_CLASSES, 4)  # rows 0-1 ignored (255)
    per_pixel = rng.uniform(0.0, 2.0, (4, 32, 32)).astype("float32")
    per_image = np.array([0.5, 1.0, 2.0, 0.0], "float32")
    outputs = {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}
    for weights, pixel_weights in ((per_pixel, per_pixel), (per_pixel[..., None], per_pixel),
                                   (per_image, np.broadcast_to(per_image[:, None, None],
                                                               (4, 32, 32)))):
        result = model.evaluate(x, y, sample_weight=weights, batch_size=4, verbose=0,
                                return_dict=True)
        for name in ("logits", "aux"):
            expected = _masked_cross_entropy(outputs[name], y, pixel_weights)
            assert_allclose(result[f"{name}_loss"], expected, rtol=2e-5, atol=1e-6)
    # Training with weights of 1 is training without weights; both ranks, every backend.
    fit = _fits_from_one_start(model)
    losses = [fit(x=x, y=y, sample_weight=weights, batch_size=2)
              for weights in (None, np.ones((4, 32, 32), "float32"), np.ones(4, "float32"))]
    assert np.isfinite(losses).all()
    assert_allclose(losses[1], losses[0], rtol=1e-5)
    assert_allclose(losses[2], losses[0], rtol=1e-5)


def test_class_weight_weighs_each_pixel_by_its_class():
    """fit(class_weight=...) on label maps (Keras' own takes one label per sample and failed
    with 'only 0-dimensional arrays can be converted to Python scalars'): the same training
    as sample_weight=weights[labels], ignored pixels 0, for arrays and tf.data."""
    import tensorflow as tf

    x = images(4)
    y = labels(NUM_CLASSES, 4)
    table = np.array([1.0, 2.5, 0.5], "float32")
    pixel_weights = np.where(y == 255, 0.0, table[np.minimum(y, 2)]).astype("float32")

    model = models.FCN(NUM_CLASSES, backbone="resnet_tiny", channels=8, aux_channels=8)
    model.compile(steps=10, metrics=[])
    first_losses = _fits_from_one_start(model)
    expected = first_losses(x=x, y=y, sample_weight=pixel_weights, batch_size=2)
    assert_allclose(first_losses(x=x, y=y, class_weight={1: 2.5, 2: 0.5}, batch_size=2),
                    expected, rtol=1e-5)
    assert_allclose(first_losses(x=x, y=y, class_weight=list(table), batch_size=2), expected,
                    rtol=1e-5)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    assert_allclose(first_losses(x=dataset, class_weight=list(table)), expected, rtol=1e-5)
    assert not np.allclose(first_losses(x=x, y=y, batch_size=2), expected, rtol=1e-3)
    for class_weight, message in (
            ({3: 1.0}, "class_weight: key 3 is not a class index in [0, 3)."),
            ([1.0, -1.0, 1.0], "class_weight: every weight must be a finite number >= 0; got "
                               "[1.0, -1.0, 1.0]."),
            ([1.0, 2.0], "class_weight must be a dict {class index: weight} or 3 weights; got "
                         "[1.0, 2.0].")):
        with pytest.raises(ValueError) as error:
            model.fit(x, y, class_weight=class_weight, verbose=0)
        assert str(error.value) == message


def test_cli_trained_run_loads_compiled_after_only_import_keras_segattn(tmp_path):
    """A model compiled by the trainer (the shared recipe, with warm-up: WarmupPolyDecay) and
    saved, then loaded in a fresh interpreter after only ``import keras_segattn``: compiled,
    with the recipe's optimizer and schedule, and no warning."""
    from keras_segattn.training import TrainConfig, trainer

    config = TrainConfig(model="fcn", backbone="resnet_tiny", dataset="synthetic", steps=20,
                         eval_every=10, warmup_steps=5, optimizer="sgd",
                         model_kwargs=dict(channels=8, aux_channels=8),
                         output_dir=str(tmp_path / "run"))
    config.validate()
    model = trainer.build_model(config, NUM_CLASSES)
    model.fit(images(), labels(NUM_CLASSES), batch_size=2, epochs=1, verbose=0)
    path = str(tmp_path / "trained.keras")
    model.save(path)
    script = (
        "import sys, warnings\n"
        "import keras, keras_segattn\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    model = keras.models.load_model({path!r})\n"
        "assert 'keras_segattn.training' not in sys.modules, 'training was imported'\n"
        "assert model.compiled, 'not compiled'\n"
        "schedule = model.optimizer._learning_rate\n"
        "print(type(model).__name__, type(model.optimizer).__name__, type(schedule).__name__,"
        " schedule.warmup_steps, int(model.optimizer.iterations.numpy()"
        " if hasattr(model.optimizer.iterations, 'numpy') else model.optimizer.iterations),"
        " len(caught), [str(w.message)[:200] for w in caught])\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert line == "FCN SGD WarmupPolyDecay 5 1 0 []", line

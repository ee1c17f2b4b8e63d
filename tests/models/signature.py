"""Behavioural signature of every named model: record it once, compare the code against it.

The signature (``tests/models/signature/``) was recorded from the code as it was before the
``Segmenter`` redesign (issue 14) so that the rebuilt models can be checked to be the same
models: for every model name and documented option (``CASES``) it holds the variable paths and
shapes, trainable / non-trainable / total parameter counts, the top-level layer names, the
output names, the default loss weights, the constructor config (without the backbone) and
the outputs on a fixed input with fixed weights. The weights are a deterministic function of
each variable's path (``fixed_value``), so any code that names its variables the same way can
be given the same values and must then give the same outputs.

Record (TensorFlow backend, from the repository root)::

    KERAS_BACKEND=tensorflow PYTHONPATH=$PWD python tests/models/signature.py

``tests/models/test_signature.py`` compares the current code against the files on every
backend.
"""

import json
import os
import sys
import zlib

import keras
import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "signature")
NUM_CLASSES = 3
INPUT_SHAPE = (1, 33, 29, 3)

_FCN = dict(channels=16, aux_channels=8)
_NL = dict(channels=16, aux_channels=8)
_CC = dict(channels=16, aux_channels=8)
_ISA = dict(channels=16, key_channels=8, value_channels=16, down_factor=(4, 4), aux_channels=8)
_CAA = dict(filters=16, channels=8)
_SA = dict(stage_channels=8, channels=8)
_FLA = dict(channels=16, aux_channels=8)
_EA = dict(channels=16, key_channels=8, value_channels=16, num_heads=2)
_LA = dict(aux_channels=8)
_DA = dict(aux_channels=8)
_A2S = dict(channels=8, attention_channels=8)

# (case name, model name, constructor arguments without num_classes).
CASES = (
    ("fcn", "FCN", dict(backbone="resnet_tiny", **_FCN)),
    ("fcn_no_aux", "FCN", dict(backbone="resnet_tiny", aux_head=False, **_FCN)),
    ("fcn_v2_os16", "FCN", dict(backbone="resnet_tiny_v2", output_stride=16, **_FCN)),
    ("fcn_v1c_align", "FCN", dict(backbone="resnet_tiny_v1c", align_corners=True, **_FCN)),
    ("fcn_one_conv", "FCN", dict(backbone="resnet_tiny", num_convs=1, concat_input=False,
                                 activation="leaky_relu", **_FCN)),
    ("nonlocalnet", "NonLocalNet", dict(backbone="resnet_tiny", **_NL)),
    ("nonlocalnet_v1c_no_aux", "NonLocalNet", dict(backbone="resnet_tiny_v1c", aux_head=False,
                                                   use_scale=False, **_NL)),
    ("danet", "DANet", dict(backbone="resnet_tiny", **_DA)),
    ("danet_no_aux_align", "DANet", dict(backbone="resnet_tiny", aux_head=False,
                                         align_corners=True, **_DA)),
    ("danet_v1c_os16", "DANet", dict(backbone="resnet_tiny_v1c", output_stride=16,
                                     inter_channels=16, reduction=4, **_DA)),
    ("danet_v2_leaky", "DANet", dict(backbone="resnet_tiny_v2", activation="leaky_relu", **_DA)),
    ("ccnet", "CCNet", dict(backbone="resnet_tiny", **_CC)),
    ("ccnet_mmseg", "CCNet", dict(backbone="resnet_tiny_v1c", activation="relu",
                                  aux_channels=256, aux_use_bias=False, channels=16)),
    ("ccnet_no_aux_r1_os16", "CCNet", dict(backbone="resnet_tiny", aux_head=False, recurrence=1,
                                           output_stride=16, **_CC)),
    ("ccnet_v2", "CCNet", dict(backbone="resnet_tiny_v2", **_CC)),
    ("isanet", "ISANet", dict(backbone="resnet_tiny", **_ISA)),
    ("isanet_no_aux_relu", "ISANet", dict(backbone="resnet_tiny_v2", aux_head=False,
                                          activation="relu", **_ISA)),
    ("isanet_v1c", "ISANet", dict(backbone="resnet_tiny_v1c", **_ISA)),
    ("caanet", "CAANet", dict(backbone="resnet_tiny", **_CAA)),
    ("caanet_no_aux_os16", "CAANet", dict(backbone="resnet_tiny", aux_head=False,
                                          output_stride=16, **_CAA)),
    ("caanet_v1c_options", "CAANet", dict(backbone="resnet_tiny_v1c", aux_loss_weight=0.3,
                                          attention_options=dict(query_group_size=4), **_CAA)),
    ("sanet", "SANet", dict(backbone="resnet_tiny", **_SA)),
    ("sanet_no_categorical", "SANet", dict(backbone="resnet_tiny", categorical_loss=False,
                                           **_SA)),
    ("sanet_no_aux_weights", "SANet", dict(backbone="resnet_tiny_v2", aux_head=False,
                                           categorical_loss_weight=0.5, align_corners=False,
                                           **_SA)),
    ("sanet_v1c_dense", "SANet", dict(backbone="resnet_tiny_v1c", dense_loss_weight=0.6, **_SA)),
    ("flanet", "FLANet", dict(backbone="resnet_tiny", **_FLA)),
    ("flanet_no_aux", "FLANet", dict(backbone="resnet_tiny", aux_head=False,
                                     align_corners=False, **_FLA)),
    ("flanet_v1c_weight", "FLANet", dict(backbone="resnet_tiny_v1c", aux_loss_weight=0.2,
                                         **_FLA)),
    ("eanet", "EANet", dict(backbone="resnet_tiny", **_EA)),
    ("eanet_no_concat_no_aux", "EANet", dict(backbone="resnet_tiny_v2", aux_head=False,
                                             concat_input=False, **_EA)),
    ("eanet_v1c", "EANet", dict(backbone="resnet_tiny_v1c", **_EA)),
    ("lanet", "LANet", dict(backbone="resnet_tiny", **_LA)),
    ("lanet_v2_no_aux", "LANet", dict(backbone="resnet_tiny_v2", aux_head=False,
                                      inter_channels=16, **_LA)),
    ("lanet_v1c", "LANet", dict(backbone="resnet_tiny_v1c", **_LA)),
    ("attentiontoscale", "AttentionToScale", dict(backbone="resnet_tiny", **_A2S)),
    ("attentiontoscale_two_scales", "AttentionToScale", dict(backbone="resnet_tiny",
                                                             scales=(1.0, 0.5), **_A2S)),
    ("attentiontoscale_no_aux_v1c", "AttentionToScale", dict(
        backbone="resnet_tiny_v1c", aux_head=False, align_corners=False, scale_loss_weight=0.5,
        **_A2S)),
)

# README "Parameter counts" (num_classes=19, trainable parameters): built without weights.
README_COUNTS = (
    ("danet_r50", "DANet", dict(backbone="resnet50")),
    ("danet_r50_no_aux", "DANet", dict(backbone="resnet50", aux_head=False)),
)


def fixed_value(path, shape):
    """The deterministic value of the variable at ``path``: NumPy ``default_rng(crc32(path))``.

    Kernels ``N(0, 1/fan_in)``; BN moving variances ``U(0.5, 1.5)``; per-channel gammas
    ``U(0.8, 1.2)``; scalar gammas (attention residual weights) ``U(0.3, 0.7)``; every other
    vector ``N(0, 0.1^2)``.
    """
    rng = np.random.default_rng(zlib.crc32(path.encode()))
    last = path.rsplit("/", 1)[-1]
    shape = tuple(shape)
    size = int(np.prod(shape)) if shape else 1
    if last == "moving_variance":
        value = rng.uniform(0.5, 1.5, shape)
    elif last == "gamma" and size == 1:
        value = rng.uniform(0.3, 0.7, shape)
    elif last == "gamma":
        value = rng.uniform(0.8, 1.2, shape)
    elif len(shape) >= 2:
        value = rng.normal(0.0, 1.0 / np.sqrt(int(np.prod(shape[:-1]))), shape)
    else:
        value = rng.normal(0.0, 0.1, shape)
    return value.astype("float32")


def assign_fixed_weights(model):
    for variable in model.weights:
        variable.assign(fixed_value(variable.path, variable.shape))


def fixed_input():
    rng = np.random.default_rng(20261204)
    return rng.uniform(0, 255, INPUT_SHAPE).astype("float32")


def build(model_name, kwargs, num_classes=NUM_CLASSES):
    from keras_segattn import models

    keras.backend.clear_session()  # stable auto-generated names
    return getattr(models, model_name)(num_classes=num_classes, **kwargs)


def _count(variables):
    return int(sum(int(np.prod(v.shape)) for v in variables))


def describe(model):
    """Everything but the outputs, JSON-serializable."""
    config = {k: v for k, v in model.get_config().items() if k != "backbone"}
    return {
        "class": type(model).__name__,
        "variables": [[w.path, list(w.shape)] for w in model.weights],
        "trainable_params": _count(model.trainable_weights),
        "non_trainable_params": _count(model.non_trainable_weights),
        "total_params": int(model.count_params()),
        "layer_names": [layer.name for layer in model.layers],
        "output_names": list(model.segmentation_output_names),
        "default_loss_weights": model.default_loss_weights,
        "config": json.loads(json.dumps(config)),
    }


def outputs(model):
    if keras.backend.backend() == "jax":  # one compiled call instead of one compile per op
        import jax

        call = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])
        result = call([v.value for v in model.trainable_variables],
                      [v.value for v in model.non_trainable_variables], fixed_input())
    else:
        result = model(fixed_input(), training=False)
    return {name: keras.ops.convert_to_numpy(value) for name, value in result.items()}


def record():
    summary = {"num_classes": NUM_CLASSES, "input_shape": list(INPUT_SHAPE),
               "backend": keras.backend.backend(), "cases": {}, "readme_counts": {}}
    arrays = {}
    for case, model_name, kwargs in CASES:
        model = build(model_name, kwargs)
        assign_fixed_weights(model)
        info = describe(model)
        info["model"] = model_name
        info["kwargs"] = json.loads(json.dumps(kwargs))
        summary["cases"][case] = info
        for name, value in outputs(model).items():
            arrays[f"{case}/{name}"] = value
        print(case, info["trainable_params"], sorted(info["output_names"]), flush=True)
    for case, model_name, kwargs in README_COUNTS:
        model = build(model_name, kwargs, num_classes=19)
        summary["readme_counts"][case] = {
            "trainable_params": _count(model.trainable_weights),
            "total_params": int(model.count_params()),
        }
        print(case, summary["readme_counts"][case], flush=True)
    os.makedirs(HERE, exist_ok=True)
    with open(os.path.join(HERE, "signature.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    np.savez_compressed(os.path.join(HERE, "outputs.npz"), **arrays)


def load():
    with open(os.path.join(HERE, "signature.json")) as f:
        summary = json.load(f)
    with np.load(os.path.join(HERE, "outputs.npz")) as data:
        arrays = {key: data[key] for key in data.files}
    return summary, arrays


if __name__ == "__main__":
    sys.exit(record())

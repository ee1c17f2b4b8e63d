"""Every named model and option against the signature recorded before the Segmenter redesign.

Same variable paths and shapes, parameter counts, layer and output names, default loss
weights and constructor config, and the same outputs for the same (path-determined) weights;
see ``signature.py`` for what was recorded and how.
"""

import keras
import numpy as np
import pytest

from keras_segattn.testing import assert_allclose
import signature

SUMMARY, ARRAYS = signature.load()


@pytest.mark.parametrize("case", sorted(SUMMARY["cases"]))
def test_model_matches_recorded_signature(case):
    recorded = SUMMARY["cases"][case]
    model = signature.build(recorded["model"], dict(_kwargs(recorded["kwargs"])))
    current = signature.describe(model)
    assert current["class"] == recorded["class"]
    assert dict(map(tuple, [(p, tuple(s)) for p, s in current["variables"]])) == {
        p: tuple(s) for p, s in recorded["variables"]}
    assert len(current["variables"]) == len(recorded["variables"])  # paths stay unique
    for key in ("trainable_params", "non_trainable_params", "total_params", "output_names",
                "default_loss_weights", "config"):
        assert current[key] == recorded[key], key
    assert set(current["layer_names"]) >= set(recorded["layer_names"]), (
        sorted(set(recorded["layer_names"]) - set(current["layer_names"])))

    signature.assign_fixed_weights(model)
    outputs = signature.outputs(model)
    assert sorted(outputs) == sorted(recorded["output_names"])
    for name, value in outputs.items():
        expected = ARRAYS[f"{case}/{name}"]
        assert value.dtype == np.float32, name
        scale = float(np.max(np.abs(expected))) or 1.0
        assert_allclose(value, expected, atol=2e-4 * scale, rtol=1e-4,
                        err_msg=f"{case}: output {name!r} differs from the recorded one")


def _kwargs(recorded):
    kwargs = dict(recorded)
    for key in ("down_factor", "scales"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    return kwargs


@pytest.mark.parametrize("case", sorted(SUMMARY["readme_counts"]))
def test_readme_parameter_counts(case):
    """The README's DANet-ResNet50 counts (num_classes=19, with and without the aux head)."""
    model_name, kwargs = {c: (m, k) for c, m, k in signature.README_COUNTS}[case]
    model = signature.build(model_name, kwargs, num_classes=19)
    expected = SUMMARY["readme_counts"][case]
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    assert trainable == expected["trainable_params"]
    assert model.count_params() == expected["total_params"]
    keras.backend.clear_session()

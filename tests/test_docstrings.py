"""Run the ``Example:`` blocks of the public API as doctests on the current backend.

Covers every public class exported by ``keras_segattn.layers``, every head of
``keras_segattn.heads`` and every public class or function of ``keras_segattn.convert`` and
``keras_segattn.common``. Examples print backend-independent values (shapes
as tuples: ``tuple(y.shape)``, never a tensor repr); an example that needs something
unavailable here (a PyTorch reference module) carries ``# doctest: +SKIP``.
"""

import doctest
import inspect

import keras
import numpy as np
import pytest

import keras_segattn
import keras_segattn.common
import keras_segattn.convert
import keras_segattn.heads
import keras_segattn.layers
import keras_segattn.metrics

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _public(module, kinds):
    """Public objects of ``kinds`` defined inside keras_segattn, by name."""
    found = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or not kinds(obj):
            continue
        if getattr(obj, "__module__", "").startswith("keras_segattn."):
            found[name] = obj
    return found


LAYERS = _public(keras_segattn.layers, inspect.isclass)
CONVERT = _public(
    keras_segattn.convert,
    lambda o: inspect.isclass(o) or inspect.isfunction(o),
)
CONVERT = {k: v for k, v in CONVERT.items() if v.__module__ == "keras_segattn.convert"}
HEADS = {k: v for k, v in _public(keras_segattn.heads, inspect.isclass).items()
         if issubclass(v, keras_segattn.heads.Head) and "Example:" in (v.__doc__ or "")}
COMMON = {k: v for k, v in _public(keras_segattn.common, inspect.isfunction).items()
          if v.__module__ == "keras_segattn.common"}
METRICS = {k: v for k, v in _public(keras_segattn.metrics, inspect.isclass).items()
           if v.__module__ == "keras_segattn.metrics"}


def _globs():
    return {
        "keras": keras,
        "np": np,
        "keras_segattn": keras_segattn,
        **LAYERS,
        **CONVERT,
        **HEADS,
        **COMMON,
        **METRICS,
    }


def _doctests(obj):
    finder = doctest.DocTestFinder(exclude_empty=True)
    return finder.find(obj, obj.__name__, globs={})


def _run(obj):
    tests = _doctests(obj)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report = []
    for test in tests:
        test.globs = _globs()
        runner.run(test, out=report.append, clear_globs=True)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    return result.attempted


def test_public_api_found():
    # Guard against the discovery silently finding nothing.
    assert {"PositionAttention", "CrissCrossAttention", "NonLocalBlock"} <= set(LAYERS)
    assert "load_reference_weights" in CONVERT
    # Every head but the abstract bases has an example.
    assert set(HEADS) == {name for name, cls in vars(keras_segattn.heads).items()
                          if isinstance(cls, type) and issubclass(cls, keras_segattn.heads.Head)
                          } - {"Head", "DualAttentionHead"}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_docstring_example(name):
    cls = LAYERS[name]
    assert "Example:" in (cls.__doc__ or ""), f"{name} has no `Example:` block"
    keras.utils.set_random_seed(0)
    try:
        attempted = _run(cls)
    finally:
        keras.backend.clear_session(free_memory=False)
    assert attempted > 0, f"{name}: the `Example:` block has no doctest lines"


@pytest.mark.parametrize("name", sorted(CONVERT))
def test_convert_docstring_examples(name):
    try:
        _run(CONVERT[name])
    finally:
        keras.backend.clear_session(free_memory=False)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_docstring_example(name):
    keras.utils.set_random_seed(0)
    try:
        attempted = _run(HEADS[name])
    finally:
        keras.backend.clear_session(free_memory=False)
    assert attempted > 0, f"{name}: the `Example:` block has no doctest lines"


@pytest.mark.parametrize("name", sorted(COMMON))
def test_common_docstring_examples(name):
    _run(COMMON[name])


def test_metric_docstring_examples():
    assert {"MeanIoU", "MeanAccuracy", "PixelAccuracy"} <= set(METRICS)
    attempted = sum(_run(METRICS[name]) for name in sorted(METRICS))
    assert attempted >= 4

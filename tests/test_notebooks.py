"""The example notebooks (``examples/*.ipynb``): they run, and the committed copies are current.

Notebooks 1-4 are executed top to bottom (nbclient, a fresh kernel each) with small
parameters injected after their parameters cell, on the TensorFlow and PyTorch backends
only: each costs a kernel start and a model build, and the JAX backend runs the same library
code in its own tests (JAX's run is the longest of CI's three; the notebooks took 122 s
there, 60 s on PyTorch). Assertions inside the notebooks (TFLite vs Keras logits, ported vs
PyTorch outputs) fail the cell, and so the test. Notebook 5 (Cityscapes with
MirroredStrategy) runs on TensorFlow with the built-in dataset, 2 steps.

The committed notebooks must carry outputs made from their current code
(``examples/run_notebooks.py --write`` records the code cells' SHA-256), pictures, no error
and no machine path.
"""

import copy
import os
import sys

import keras
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import run_notebooks  # noqa: E402

BACKEND = keras.backend.backend()
EXECUTED_ON = ("tensorflow", "torch")
# Smaller than the notebooks' CPU defaults: CI runs the suite once per backend.
CI_PARAMETERS = {
    "01_quickstart.ipynb": dict(steps=30, eval_batches=2),
    "02_pretrained.ipynb": dict(photos=("astronaut",), image_size=96, crop_size=(64, 64),
                                stride=(48, 48), scales=(0.75, 1.0)),
    "03_porting_weights.ipynb": dict(channels=32, feature_size=(6, 9), height=32, width=48),
    "04_mechanisms.ipynb": dict(size=(24, 24), channels=32, repeat=1),
}
CITYSCAPES_CI_PARAMETERS = dict(
    dataset="synthetic", dataset_config="32px_tiny", manual_dir=None, backbone="resnet_tiny",
    backbone_weights=None, crop_size=(32, 32), batch_size=2, steps=2, eval_every=2,
    eval_crop=(16, 16), eval_stride=(16, 16), eval_batches=1)


def _path(name):
    return os.path.join(ROOT, "examples", name)


def _outputs(notebook, output_type=None):
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
            if output_type is None or o.output_type == output_type]


def test_every_notebook_is_listed():
    on_disk = sorted(f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".ipynb"))
    assert on_disk == sorted(run_notebooks.NOTEBOOKS + (run_notebooks.CITYSCAPES_NOTEBOOK,))
    assert set(CI_PARAMETERS) == set(run_notebooks.NOTEBOOKS)


@pytest.mark.skipif(BACKEND not in EXECUTED_ON,
                    reason=f"notebooks are executed on {EXECUTED_ON} only (CI time)")
@pytest.mark.parametrize("name", run_notebooks.NOTEBOOKS)
def test_notebook_runs(name, tmp_path_factory):
    parameters = dict(CI_PARAMETERS[name])
    if "data_dir" in run_notebooks.parameter_names(run_notebooks.read(_path(name))):
        parameters["data_dir"] = str(tmp_path_factory.mktemp("tfds"))
    executed = run_notebooks.execute(_path(name), parameters, backend=BACKEND)
    assert not _outputs(executed, "error")
    assert any("image/png" in o.get("data", {}) for o in _outputs(executed)), "no picture"
    # What ran is the committed code plus the injected cell.
    committed = run_notebooks.read(_path(name))
    assert run_notebooks.code_sha256(executed) == run_notebooks.code_sha256(committed)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="MirroredStrategy is TensorFlow's; run on the TensorFlow backend")
def test_cityscapes_notebook_code_runs(tmp_path):
    parameters = dict(CITYSCAPES_CI_PARAMETERS, data_dir=str(tmp_path / "tfds"),
                      output_dir=str(tmp_path / "run"))
    executed = run_notebooks.execute(_path(run_notebooks.CITYSCAPES_NOTEBOOK), parameters,
                                     backend=BACKEND)
    text = "".join(o.get("text", "") for o in _outputs(executed, "stream"))
    assert "mirrored over 1 replica(s)" in text
    # The per-interval evaluation during training, then the sliding-window table last.
    assert text.count("mIoU:") >= 2 and text.strip().splitlines()[-1].startswith("mIoU:")
    assert os.path.isfile(tmp_path / "run" / "model.keras")


@pytest.mark.parametrize("name", run_notebooks.NOTEBOOKS)
def test_committed_notebook_is_current(name):
    notebook = run_notebooks.read(_path(name))
    assert run_notebooks.problems(notebook, name) == []
    assert notebook.metadata["keras_segattn"]["backend"] == run_notebooks.WRITE_BACKEND
    assert not [o for o in _outputs(notebook, "stream") if o.name == "stderr"]


def test_cityscapes_notebook_is_committed_without_outputs():
    notebook = run_notebooks.read(_path(run_notebooks.CITYSCAPES_NOTEBOOK))
    assert not _outputs(notebook)
    run_notebooks.parameters_cell_index(notebook)  # exactly one parameters cell


def test_committed_notebooks_are_small():
    sizes = {n: os.path.getsize(_path(n)) for n in run_notebooks.NOTEBOOKS}
    assert sum(sizes.values()) < 3 * 2**20, sizes


def test_staleness_check_catches_changes():
    notebook = run_notebooks.read(_path(run_notebooks.NOTEBOOKS[0]))
    assert run_notebooks.problems(notebook, "nb") == []

    edited = copy.deepcopy(notebook)
    code = [c for c in edited.cells if c.cell_type == "code"]
    code[-1].source += "\nprint('changed')"
    assert run_notebooks.problems(edited, "nb") == [
        "nb: its code cells changed since the outputs were stored; run "
        "python examples/run_notebooks.py --write"]

    leaky = copy.deepcopy(notebook)
    stream = [o for o in _outputs(leaky, "stream")][0]
    stream.text += "saved to /home/someone/model.keras\n"
    assert any("machine path: '/home/'" in p for p in run_notebooks.problems(leaky, "nb"))

    failed = copy.deepcopy(notebook)
    cell = [c for c in failed.cells if c.cell_type == "code"][1]
    cell.outputs.append(nbformat.v4.new_output(
        "error", ename="ValueError", evalue="boom", traceback=[]))
    assert any("stored an error: ValueError" in p for p in run_notebooks.problems(failed, "nb"))

    unexecuted = copy.deepcopy(notebook)
    [c for c in unexecuted.cells if c.cell_type == "code"][0].execution_count = None
    assert any("not all executed" in p for p in run_notebooks.problems(unexecuted, "nb"))


def test_parameters_injection():
    notebook = run_notebooks.read(_path("01_quickstart.ipynb"))
    names = run_notebooks.parameter_names(notebook)
    assert {"dataset", "steps", "backbone", "export_size"} <= set(names)
    injected = run_notebooks.inject_parameters(copy.deepcopy(notebook), {"steps": 5}, "nb1")
    index = run_notebooks.parameters_cell_index(injected)
    assert injected.cells[index + 1].source == "# Injected parameters\nsteps = 5\n"
    with pytest.raises(ValueError, match=r"nb1: unknown parameter\(s\) \['stepz'\]"):
        run_notebooks.inject_parameters(copy.deepcopy(notebook), {"stepz": 5}, "nb1")


def test_normalize_collapses_progress_and_scrubs_paths():
    assert run_notebooks._collapse_progress("1/3 ..\r2/3 ..\r3/3 done\nnext") == "3/3 done\nnext"
    assert run_notebooks._collapse_progress("ab\b\bcd") == "cd"
    home = os.path.expanduser("~")
    assert run_notebooks._scrub(f"{ROOT}/examples and {home}/x") == "./examples and ~/x"

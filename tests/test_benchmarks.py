"""The CPU benchmarks' code paths at tiny sizes on this backend: the layer benchmark's dry run
(our layers side by side with the PyTorch versions of the official modules, outputs compared)
and the whole-model train/inference step benchmark with its XLA FLOP count. No timing is
asserted: speed targets live in benchmarks/RESULTS.md."""

import json
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()


def run(script, *arguments):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script),
                           *arguments], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def import_layer_benchmark():
    """``benchmarks/layer_benchmark.py`` as a module (the benchmarks are scripts, not a package)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import layer_benchmark
    finally:
        sys.path.pop(0)
    return layer_benchmark


def test_layer_benchmark_dry_run(tmp_path):
    run("layer_benchmark.py", "--dry-run", "--backends", BACKEND, "--layers", "pam", "isa",
        "--out", str(tmp_path))
    results = json.loads((tmp_path / "layers.json").read_text())
    records = results["records"]
    engines = {r["engine"] for r in records}
    assert engines == {"official", BACKEND}
    ours = [r for r in records if r["engine"] == BACKEND]
    assert {r["case"] for r in ours} == {"pam", "isa"}
    for r in records:
        assert r.get("error") is None, r
        assert r["median"] > 0 and r["flops"] > 0
    # Same weights, same outputs: ours against the official module's forward.
    compared = [r for r in ours if r.get("max_rel_diff") is not None]
    assert compared and max(r["max_rel_diff"] for r in compared) < 1e-4
    # PyTorch peaks from the allocation events (the bytes of live tensors), first and steady
    # calls. (TensorFlow's events leave out allocations this small: a 32 KiB tensor reads 0,
    # a 256 KiB one exactly; its peak is tested below at real sizes.)
    for r in records:
        if r["engine"] in ("official", "torch"):
            assert r["first_peak"] > 0 and r["steady_peak"] > 0, r
    assert "PositionAttention" in (tmp_path / "layers.md").read_text()
    assert (tmp_path / "layers_time.png").stat().st_size > 0


def test_markdown_ratio_spread_pairs_the_calls_of_each_round():
    layer_benchmark = import_layer_benchmark()

    def record(engine, mode, times):
        return {"case": "cam", "title": "ChannelAttention (DANet CAM)", "size": 64,
                "channels": 8, "engine": engine, "mode": mode, "times": times,
                "median": sorted(times)[len(times) // 2], "flops": 1,
                "first_seconds": 0.1, "first_peak": None, "steady_peak": None}

    records = [record("official", "fwd", [1.0, 2.0, 4.0]),
               record("official", "fwd+bwd", [3.0, 3.0, 3.0]),
               # round by round: 1.1, 0.5, 1.1 (the medians: 1.1 / 2.0 = 0.55)
               record("torch", "fwd", [1.1, 1.0, 4.4]),
               record("torch", "fwd+bwd", [1.5, 3.0, 6.0])]
    results = {"records": records, "command": "layer_benchmark.py", "date": "today",
               "machine": {"cpus": 2}, "settings": {"repeat": 3, "warmup": 0}, "load": [1.0]}
    text = layer_benchmark.markdown(results)
    spread = text[text.index("## Spread of the ratios"):text.index("## Absolute times")]
    assert "| ChannelAttention | 64 | 0.50-1.10 \\| 0.50-2.00 | – \\| – |" in spread
    ratios = text[text.index("## Time ratios"):text.index("## Spread of the ratios")]
    assert "| 0.55 \\| 1.00 |" in ratios


def test_torch_allocation_peak_is_the_peak_of_live_tensor_bytes():
    torch = pytest.importorskip("torch")
    layer_benchmark = import_layer_benchmark()
    before = torch.zeros(256, 1024)  # live before the call: not counted

    def call():
        kept = torch.ones(1024, 1024)  # 4 MiB, returned
        temporary = torch.ones(2048, 1024)  # 8 MiB, freed inside
        temporary.add_(before.sum())  # in place: no third tensor
        del temporary
        return kept

    (result, seconds, _), peak = layer_benchmark._torch_allocation_peak(call)
    assert result.shape == (1024, 1024) and seconds > 0
    # 4 + 8 MiB live at once; the scalar sum adds a few bytes.
    assert 12 * 2**20 <= peak < 12 * 2**20 + 4096


TENSORFLOW_PEAK_CHECK = """
import numpy as np
import tensorflow as tf
import layer_benchmark

before = tf.constant(np.ones((256, 1024), "float32"))  # live before the call: not counted

def call():
    kept = tf.ones((1024, 1024)) + before[0]  # 4 MiB, returned (the ones freed inside)
    temporary = tf.ones((2048, 1024))  # 8 MiB, freed inside
    del temporary
    return kept

(result, seconds, _), peak = layer_benchmark._tensorflow_allocation_peak(call)
assert tuple(result.shape) == (1024, 1024) and seconds > 0
print(peak)
"""


def run_tensorflow_peak_check(allocator_use_bfc):
    """``TENSORFLOW_PEAK_CHECK`` in a fresh process (TensorFlow reads the allocator setting
    when it starts), as the benchmark's TensorFlow worker runs it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "benchmarks")]),
               TF_CPU_ALLOCATOR_USE_BFC=allocator_use_bfc, TF_ENABLE_ONEDNN_OPTS="0",
               TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", TENSORFLOW_PEAK_CHECK], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's profiler")
def test_tensorflow_allocation_peak_is_the_peak_of_live_tensor_bytes():
    proc = run_tensorflow_peak_check("true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak = int(proc.stdout.split()[-1])
    # The ones (4 MiB) and the sum (4 MiB) are live together, then the 8 MiB temporary beside
    # the sum: 12 MiB at most at once, not the 16 MiB a chunk-rounding allocator would report.
    assert 12 * 2**20 <= peak < 12 * 2**20 + 4096


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's profiler")
def test_tensorflow_allocation_peak_without_events_says_why():
    # Without oneDNN and without the BFC allocator TensorFlow's profiler records no
    # allocation: the peak would read 0, so the measurement refuses.
    proc = run_tensorflow_peak_check("false")
    assert proc.returncode != 0
    assert ("RuntimeError: TensorFlow's profiler recorded no allocation events: set "
            "TF_CPU_ALLOCATOR_USE_BFC=true") in proc.stderr


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's profiler")
def test_layer_benchmark_reads_tensorflow_peaks(tmp_path):
    # The TensorFlow worker starts with the BFC allocator, whatever the CPU: a peak at least
    # the 1 MiB output (1 x 32 x 32 x 256 float32) of the layer's calls, not 0.
    run("layer_benchmark.py", "--backends", "tensorflow", "--layers", "cam", "--sizes", "32",
        "--channels", "256", "--modes", "fwd", "--repeat", "1", "--warmup", "0",
        "--out", str(tmp_path))
    records = json.loads((tmp_path / "layers.json").read_text())["records"]
    ours = [r for r in records if r["engine"] == "tensorflow"]
    assert ours and all(r.get("error") is None for r in ours), ours
    for r in ours:
        assert r["first_peak"] >= 2**20 and r["steady_peak"] >= 2**20, r


@pytest.fixture(scope="module")
def default_train_step(tmp_path_factory):
    """One run of the default model's step benchmark at 16x16 (batch 2): its JSON and stdout."""
    out = tmp_path_factory.mktemp("train_step") / "steps.json"
    proc = run("train_step.py", "--sizes", "16", "--batch", "2", "--repeat", "1", "--warmup",
               "0", "--backends", BACKEND, "--peak-size", "128", "--json", str(out))
    return json.loads(out.read_text()), proc.stdout


# Checked once, on the PyTorch run: the shortest of CI's three (JAX's is the longest).
STEP_BENCHMARK_BACKEND = "torch"


@pytest.mark.skipif(BACKEND != STEP_BENCHMARK_BACKEND, reason="the FLOP count runs in a JAX "
                    "worker whatever the backend: checked once, on the PyTorch run")
def test_train_step_benchmark_counts_flops(default_train_step):
    data, stdout = default_train_step
    flops = data["flops"]["16"]
    assert 0 < flops["infer_gflop"] < flops["train_gflop"] < 4 * flops["infer_gflop"]
    (row,) = data["rows"]
    assert row["backend"] == BACKEND and row["size"] == 16
    assert row["backbone"] == "resnet_tiny" and row["num_classes"] == 5
    assert row["step_ms"] > 0 and row["infer_ms"] > 0 and row["matmul_peak_gflops"] > 0
    assert f"| {BACKEND} | default | 16 |" in stdout and "%" in stdout


@pytest.mark.skipif(BACKEND != STEP_BENCHMARK_BACKEND,
                    reason="one backend is enough for the options")
def test_train_step_benchmark_backbone_and_classes(default_train_step, tmp_path):
    """``--backbone`` / ``--num-classes`` reach the model: ResNet-18 (V1c) has more than ten
    times the FLOPs of the default run's ``resnet_tiny`` (same batch and size)."""
    out = tmp_path / "resnet18.json"
    run("train_step.py", "--sizes", "16", "--batch", "2", "--repeat", "1", "--warmup", "0",
        "--backends", BACKEND, "--peak-size", "64", "--num-classes", "3", "--json", str(out),
        "--backbone", "resnet18_v1c")
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["backbone"] == "resnet18_v1c" and row["num_classes"] == 3
    default_flops = default_train_step[0]["flops"]["16"]["train_gflop"]
    assert data["flops"]["16"]["train_gflop"] > 10 * default_flops


@pytest.mark.skipif(BACKEND != "jax", reason="XLA's buffer assignment through jax.jit")
def test_jax_jit_peak_is_xla_buffer_assignment():
    import jax
    import jax.numpy as jnp

    layer_benchmark = import_layer_benchmark()
    x = jnp.ones((1024, 1024))  # the argument: live before the call, not counted

    def two_products(x):
        # exp(x) @ x (4 MiB) must be live while it multiplies sin(x): one temporary of at
        # least 4 MiB, and the 4 MiB output.
        return (jnp.exp(x) @ x) @ jnp.sin(x)

    peak = layer_benchmark._xla_buffer_peak(jax.jit(two_products), x)
    assert 8 * 2**20 <= peak <= 12 * 2**20 + 4096
    # A sum's output is 4 bytes; it needs its product (4 MiB) as a temporary.
    peak = layer_benchmark._xla_buffer_peak(jax.jit(lambda x: jnp.sum(two_products(x))), x)
    assert 4 * 2**20 <= peak <= 8 * 2**20 + 4096


def test_a_dead_worker_is_reported_with_the_end_of_its_log():
    """A worker that dies before answering names its engine, exit code and last log lines."""
    layer_benchmark = import_layer_benchmark()
    message = r"worker no_such_engine exited \(code 2\): .*invalid choice"
    with pytest.raises(RuntimeError, match=message):
        layer_benchmark.Worker("no_such_engine", dry_run=False)

"""benchmarks/gpu_anchors.py --dry-run: the GPU script's code paths on the CPU at tiny sizes,
for this backend's engine (plus the plain PyTorch models on the torch run and the
``keras-segattn train --distribution mirrored`` run on the TensorFlow run), and the JSON and
markdown it writes. No timing is asserted."""

import json
import os
import subprocess
import sys

import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()


def test_dry_run_writes_every_case(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "gpu_anchors.py"), "--dry-run",
               "--out", str(tmp_path), "--backends", BACKEND]
    if BACKEND != "torch":
        command.append("--no-reference")
    if BACKEND != "tensorflow":
        command.append("--no-mirrored")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_anchors.json").read_text())
    assert results["dry_run"] is True
    assert results["settings"]["backbone"] == "resnet_tiny"
    engines = [BACKEND] + (["reference"] if BACKEND == "torch" else [])
    assert sorted(results["engines"]) == sorted(engines)
    for engine in engines:
        result = results["engines"][engine]
        assert result["process_status"] == "ok", result.get("stderr_tail")
        assert set(result["matmul_peak_tflops"]) == {"float32", "bfloat16"}
        assert all(v > 0 for v in result["matmul_peak_tflops"].values())
        records = result["records"]
        # The dry plan: one training case, two inference cases (reference: 1 + 2).
        assert sorted(r["kind"] for r in records) == ["infer", "infer", "train"], records
        for r in records:
            assert r["status"] == "ok", r
            assert r["tflop"] > 0 and r["tflops"] > 0 and r["peak_memory_gb"] > 0
            if r["kind"] == "infer":
                assert r["size"] == [64, 128] and r["batch"] == 1 and r["fps"] > 0
            else:
                assert r["size"] == [64, 64] and r["batch"] == 2 and r["step_ms"] > 0
    if BACKEND == "tensorflow":
        mirrored = results["mirrored"]
        assert mirrored["status"] == "ok", mirrored["output_tail"]
        assert mirrored["run"]["distribution"] == "mirrored"
        assert mirrored["metrics"]["steps"] == 2
        assert "--sync-bn" in mirrored["command"]
    else:
        assert "mirrored" not in results
    table = (tmp_path / "gpu_anchors.md").read_text()
    assert table.startswith("# GPU anchors (dry run, CPU, tiny sizes)")
    assert table.count("| ok |") == sum(len(results["engines"][e]["records"]) for e in engines)

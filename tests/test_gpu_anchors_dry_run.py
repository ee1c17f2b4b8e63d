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
    assert results["settings"]["backbone"] == "resnet_tiny_v1c"
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


def test_analytic_flops_reproduce_the_anchor_tables():
    """The FLOPs the GPU run divides by: performance-anchors.md §4d's whole-model GFLOPs at
    the 512x1024 training crop and at 512x512 (computed there from the layer shapes), which
    the §0 totals scaled by the pixel count miss by up to 20 % (DANet's N^2 map)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import gpu_anchors

    anchors = {(512, 1024): {"fcn": 1101, "nonlocalnet": 1178, "ccnet": 1115, "danet": 1192,
                             "isanet": 910},
               (512, 512): {"fcn": 550, "nonlocalnet": 572, "ccnet": 557, "danet": 577,
                            "isanet": 455}}
    for size, gflops in anchors.items():
        for model, gflop in gflops.items():
            counted = 1e3 * gpu_anchors.analytic_tflop(model, size)
            assert abs(counted - gflop) <= 0.6, (model, size, counted, gflop)
    # The 1024x2048 totals themselves, and a training step of 2 images is 3 x 2 forwards.
    assert abs(gpu_anchors.analytic_tflop("danet", (1024, 2048)) - 5.6969) < 1e-9
    assert abs(gpu_anchors.analytic_tflop("danet", (512, 1024), 2, train=True)
               - 6 * gpu_anchors.analytic_tflop("danet", (512, 1024))) < 1e-9
    # §4b's attention cores (GFLOPs, C = 512) at 64x64 and 128x128.
    cores = {(64, 64): {"nonlocalnet": 17.2, "danet": 19.3 + 4.3, "ccnet": 1.2, "isanet": 0.8},
             (128, 128): {"nonlocalnet": 274.9, "danet": 309.2 + 17.2, "ccnet": 9.6,
                          "isanet": 8.1}}
    for size, gflops in cores.items():
        for model, gflop in gflops.items():
            counted = gpu_anchors.attention_core_gflop(model, size)
            assert abs(counted - gflop) <= 0.06, (model, size, counted, gflop)

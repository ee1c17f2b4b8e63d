"""Whole-model training step of the default run on every backend (issue target: torch within
2x of TensorFlow).

    python benchmarks/train_step.py                        # all backends and variants
    python benchmarks/train_step.py --backends torch --variants eager flush_denormal

The model is what ``keras-segattn train`` builds without arguments (DANet on ``resnet_tiny``,
OS8, 5 classes, the recipe's optimizer and losses; ``keras_segattn.training.build_model``),
one ``train_on_batch`` of the default global batch (8 images, 32x32 crop). Each backend and
variant runs in its own process; the median of ``--repeat`` steps after ``--warmup`` is
printed as a markdown table (and JSON with ``--json``). Variants:

* ``default``: ``compile()`` as the trainer does (``jit_compile="auto"``: XLA on TensorFlow
  and JAX, eager on torch);
* ``eager``: ``jit_compile=False``;
* ``jit``: ``jit_compile=True`` (torch: ``torch.compile``);
* ``flush_denormal``: torch only, ``torch.set_flush_denormal(True)`` + the default compile;
* ``one_thread``: torch only, ``torch.set_num_threads(1)`` (intra-op threads spinning on a
  shared, loaded machine) + the default compile.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("default", "eager", "jit", "flush_denormal", "one_thread")


def worker(variant, warmup, repeat, batch, size):
    import keras
    import numpy as np

    from keras_segattn.training import TrainConfig, trainer

    if variant == "flush_denormal":
        import torch

        torch.set_flush_denormal(True)
    if variant == "one_thread":
        import torch

        torch.set_num_threads(1)
    config = TrainConfig(num_classes=5, batch_size=batch, crop_size=(size, size)).validate()
    keras.utils.set_random_seed(0)
    model = trainer.build_model(config, 5)
    if variant in ("eager", "jit"):
        model.compile(**trainer.recipe_arguments(config), jit_compile=variant == "jit")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 5, (batch, size, size)).astype("int32")
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    print(json.dumps({"backend": keras.backend.backend(), "variant": variant,
                      "first_step_s": first, "step_ms": 1e3 * statistics.median(times),
                      "min_ms": 1e3 * min(times), "load": os.getloadavg()[0]}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--backends", nargs="*", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.warmup, args.repeat, args.batch, args.size)
        return
    rows = []
    for backend in args.backends:
        for variant in args.variants:
            if variant in ("flush_denormal", "one_thread") and backend != "torch":
                continue
            env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
                       PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
            command = [sys.executable, os.path.abspath(__file__), "--worker", variant,
                       "--warmup", str(args.warmup), "--repeat", str(args.repeat),
                       "--batch", str(args.batch), "--size", str(args.size)]
            try:
                proc = subprocess.run(command, env=env, capture_output=True, text=True,
                                      timeout=args.timeout)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
                row = json.loads(lines[-1]) if lines else {
                    "backend": backend, "variant": variant, "error": proc.stderr[-500:]}
            except subprocess.TimeoutExpired:
                row = {"backend": backend, "variant": variant,
                       "error": f"timed out after {args.timeout} s"}
            rows.append(row)
            print(json.dumps(row), flush=True)
    reference = next((r["step_ms"] for r in rows if r["backend"] == "tensorflow"
                      and r["variant"] == "default" and "step_ms" in r), None)
    print("\n| backend | variant | step ms (median) | min ms | first step s | vs TF default |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        if "step_ms" not in r:
            print(f"| {r['backend']} | {r['variant']} | {r['error'][-80:]!r} | | | |")
            continue
        ratio = f"{r['step_ms'] / reference:.2f}x" if reference else ""
        print(f"| {r['backend']} | {r['variant']} | {r['step_ms']:.1f} | {r['min_ms']:.1f} | "
              f"{r['first_step_s']:.1f} | {ratio} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

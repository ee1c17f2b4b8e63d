"""Whole-model training and inference steps of the default run on every backend, at several
sizes, with analytic FLOPs and the fraction of the machine's matmul peak they reach (issue
target: the torch training step within 2x of TensorFlow's).

    python benchmarks/train_step.py                          # default variant, 32/64/128 px
    python benchmarks/train_step.py --sizes 32 --variants default jit one_thread
    python benchmarks/train_step.py --sizes 16 --repeat 2 --warmup 1   # seconds; CI smoke run
    python benchmarks/train_step.py --backbone resnet50_v1c --num-classes 19 --batch 2 \
        --sizes 128 --repeat 4 --warmup 1   # DANet R-50-D8, the step quoted in RESULTS.md

The model is what ``keras-segattn train`` builds without arguments (DANet on ``resnet_tiny``,
OS8, 5 classes, the recipe's optimizer, losses and mIoU metric;
``keras_segattn.training.build_model``), or with ``--backbone`` / ``--num-classes`` (the
trainer's options of the same names, e.g. ``resnet50_v1c``, randomly initialised). Per
backend, variant and size (each in its own process): the median and minimum of ``--repeat``
``train_on_batch`` calls after ``--warmup`` (batch ``--batch``, square ``size`` crops) and
likewise of ``predict_on_batch``; the first training step (compilation included); the
``--peak-size`` float32 matmul rate of that backend on this machine (the roof;
``gpu_anchors.matmul_peak``).

FLOPs are counted once per size by XLA's cost analysis of the compiled JAX functions (the
whole forward pass in inference mode, and forward + backward of a training-mode forward
w.r.t. every trainable weight; the optimizer update and the loss are elementwise and left
out), so "GFLOP/s" and "% of peak" compare the backends on the same work. Variants:

* ``default``: ``compile()`` as the trainer does (``jit_compile="auto"``: XLA on TensorFlow
  and JAX, eager on torch);
* ``eager``: ``jit_compile=False``;
* ``jit``: ``jit_compile=True`` (torch: ``torch.compile``, minutes of compilation on a CPU);
* ``flush_denormal``: torch only, ``torch.set_flush_denormal(True)`` + the default compile;
* ``one_thread``: torch only, ``torch.set_num_threads(1)`` + the default compile.

Prints a markdown table; ``--json`` also writes the rows.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VARIANTS = ("default", "eager", "jit", "flush_denormal", "one_thread")
TORCH_ONLY = ("flush_denormal", "one_thread")


def build(batch, size, variant="default", backbone=None, num_classes=5):
    """The run's compiled model (the default run's unless ``backbone`` / ``num_classes`` say
    otherwise), one batch of inputs and labels, and the backbone the trainer built."""
    import keras
    import numpy as np

    from keras_segattn.training import TrainConfig, trainer

    options = {"backbone": backbone} if backbone else {}
    config = TrainConfig(num_classes=num_classes, batch_size=batch, crop_size=(size, size),
                         **options).validate()
    keras.utils.set_random_seed(0)
    model = trainer.build_model(config, num_classes)
    if variant in ("eager", "jit"):
        model.compile(**trainer.recipe_arguments(config), jit_compile=variant == "jit")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, num_classes, (batch, size, size)).astype("int32")
    return model, x, y, config.backbone


def timings(fn, warmup, repeat):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), 1e3 * min(times)


def worker(variant, warmup, repeat, batch, size, peak_size, backbone, num_classes):
    import keras

    backend = keras.backend.backend()
    if variant == "flush_denormal":
        import torch

        torch.set_flush_denormal(True)
    if variant == "one_thread":
        import torch

        torch.set_num_threads(1)
    model, x, y, built_backbone = build(batch, size, variant, backbone, num_classes)
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    train_ms, train_min = timings(lambda: model.train_on_batch(x, y), warmup, repeat)
    infer_ms, infer_min = timings(lambda: model.predict_on_batch(x), warmup, repeat)
    from gpu_anchors import matmul_peak  # benchmarks/ is this script's folder

    peak = matmul_peak(backend, peak_size, dtypes=("float32",))["float32"]
    print(json.dumps({"backend": backend, "variant": variant, "size": size, "batch": batch,
                      "backbone": built_backbone, "num_classes": num_classes,
                      "first_step_s": first, "step_ms": train_ms, "min_ms": train_min,
                      "infer_ms": infer_ms, "infer_min_ms": infer_min,
                      "matmul_peak_gflops": 1e3 * peak, "load": os.getloadavg()[0]}))


def flops_worker(batch, size, backbone, num_classes):
    """XLA's FLOP count of the inference forward and of a training forward + backward (JAX)."""
    import jax
    import keras

    model, x, _, _ = build(batch, size, backbone=backbone, num_classes=num_classes)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def forward(trainable, non_trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    def scalar(trainable, non_trainable, x):
        outputs = model.stateless_call(trainable, non_trainable, x, training=True)[0]
        return sum(keras.ops.mean(o) for o in keras.tree.flatten(outputs))

    def count(fn):
        analysis = jax.jit(fn).lower(trainable, non_trainable, x).compile().cost_analysis()
        if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
            analysis = analysis[0]
        return float(analysis["flops"])

    print(json.dumps({"size": size, "batch": batch, "infer_gflop": count(forward) / 1e9,
                      "train_gflop": count(jax.grad(scalar)) / 1e9}))


def run_worker(backend, arguments, timeout):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, os.path.abspath(__file__), *arguments]
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": proc.stderr[-500:]}


def markdown(rows, flops):
    reference = {r["size"]: r for r in rows
                 if r["backend"] == "tensorflow" and r["variant"] == "default" and "step_ms" in r}
    lines = ["| backend | variant | size | train ms, median (min) | infer ms, median (min) | "
             "first step s | train GFLOP/s (% of matmul peak) | infer GFLOP/s (% of peak) | "
             "train vs TF |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "step_ms" not in r:
            lines.append(f"| {r['backend']} | {r['variant']} | {r['size']} | "
                         f"{r['error'][-80:]!r} | | | | | |")
            continue
        count, peak = flops.get(r["size"], {}), r["matmul_peak_gflops"]

        def rate(gflop, ms):
            if not gflop:
                return ""
            achieved = gflop / (ms / 1e3)
            return f"{achieved:.1f} ({100 * achieved / peak:.0f} %)"

        tf = reference.get(r["size"])
        ratio = f"{r['step_ms'] / tf['step_ms']:.2f}x" if tf else ""
        lines.append(
            f"| {r['backend']} | {r['variant']} | {r['size']} | {r['step_ms']:.1f} "
            f"({r['min_ms']:.1f}) | {r['infer_ms']:.1f} ({r['infer_min_ms']:.1f}) | "
            f"{r['first_step_s']:.1f} | {rate(count.get('train_gflop'), r['step_ms'])} | "
            f"{rate(count.get('infer_gflop'), r['infer_ms'])} | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--flops-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backends", nargs="*", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--variants", nargs="*", default=["default"], choices=VARIANTS)
    parser.add_argument("--sizes", type=int, nargs="*", default=[32, 64, 128])
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)  # a worker's size
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--backbone", help="the trainer's --backbone (default: resnet_tiny)")
    parser.add_argument("--num-classes", type=int, default=5)
    parser.add_argument("--peak-size", type=int, default=1024,
                        help="n of the n x n float32 matmul that measures the peak")
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--json", help="also write the rows and FLOP counts to this file")
    args = parser.parse_args(argv)
    if args.flops_worker:
        flops_worker(args.batch, args.size, args.backbone, args.num_classes)
        return
    if args.worker:
        worker(args.worker, args.warmup, args.repeat, args.batch, args.size, args.peak_size,
               args.backbone, args.num_classes)
        return
    common = ["--warmup", str(args.warmup), "--repeat", str(args.repeat),
              "--batch", str(args.batch), "--peak-size", str(args.peak_size),
              "--num-classes", str(args.num_classes)]
    if args.backbone:
        common += ["--backbone", args.backbone]
    flops = {}
    for size in args.sizes:
        counted = run_worker("jax", ["--flops-worker", "--size", str(size), *common],
                             args.timeout)
        print(json.dumps(counted), flush=True)
        if "error" not in counted:
            flops[size] = counted
    rows = []
    for size in args.sizes:
        for backend in args.backends:
            for variant in args.variants:
                if variant in TORCH_ONLY and backend != "torch":
                    continue
                row = {"backend": backend, "variant": variant, "size": size}
                row.update(run_worker(backend, ["--worker", variant, "--size", str(size),
                                                *common], args.timeout))
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print(markdown(rows, flops))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "flops": {str(k): v for k, v in flops.items()}}, f,
                      indent=1)


if __name__ == "__main__":
    main()

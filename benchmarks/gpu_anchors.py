"""One-shot GPU run of mmsegmentation's anchors on every backend (at most ~8 minutes).

    pip install -e .[dev] && python benchmarks/gpu_anchors.py --out benchmarks/results/gpu
    python benchmarks/gpu_anchors.py --dry-run --out /tmp/gpu_dry   # CPU, tiny sizes, < 60 s

Reproduces, side by side in one session, the anchors of ``../shared/docs/performance-anchors.md``
(mmseg model zoo, V100, FP32; section 0 and 2a):

* inference fps, batch 1, whole 1024x2048 image, ResNet-101-D8 (``resnet101_v1c``, mmseg's
  ResNetV1c, as the plain PyTorch models below; random weights: speed does not depend on
  them): FCN 2.66, DANet 1.99, CCNet 2.31, ISANet 2.35, NonLocal 1.95 fps;
  float32 / mixed_bfloat16 / mixed_float16, compiled (XLA / ``jax.jit`` / ``torch.compile``)
  and not;
* training step time and peak accelerator memory at a 512x1024 crop, batch 2 (mmseg's
  2 images per GPU): DANet 10.9, CCNet 9.5, ISANet 9.43 GB;
* the same models in plain PyTorch (``tests/torch_mmseg_reference.py``, written from the
  mmseg modules; no ISANet there) on the same device: the ratio "ours / PyTorch" holds on any
  GPU, unlike a comparison with the V100 numbers;
* the device's measured matmul peak (float32 and bfloat16), so that the achieved FLOP/s of
  each model (analytic FLOPs of performance-anchors.md section 4) is a fraction of it;
* a short ``keras-segattn train --distribution mirrored`` run (TensorFlow, every local GPU) on
  the built-in synthetic dataset: the ``model.fit`` on GPU path.

Every engine runs in its own process (``KERAS_BACKEND`` is fixed per process) with its share
of ``--budget-s``; cases are ordered by priority and a case that would start after an engine's
deadline is recorded as skipped, so the run always finishes and always writes
``gpu_anchors.json`` and ``gpu_anchors.md`` to ``--out``. ``--dry-run`` runs the same code on
the CPU with ``resnet_tiny_v1c`` at tiny sizes (the CI test ``tests/test_gpu_anchors_dry_run.py``).
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BACKENDS = ("tensorflow", "jax", "torch")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# performance-anchors.md: mmseg R-101-D8 Cityscapes, V100 FP32 (fps at 1024x2048; training
# memory in GB at a 512x1024 crop, 2 images per GPU); whole-model TFLOP at 1024x2048 (§4d, [C]).
MMSEG_FPS = {"fcn": 2.66, "danet": 1.99, "ccnet": 2.31, "isanet": 2.35, "nonlocalnet": 1.95}
MMSEG_TRAIN_MEMORY_GB = {"fcn": 9.2, "danet": 10.9, "ccnet": 9.5, "isanet": 9.43,
                         "nonlocalnet": 10.9}
TFLOP_1024x2048 = {"fcn": 4.4028, "danet": 5.6969, "ccnet": 4.4748, "isanet": 3.6587,
                   "nonlocalnet": 5.5367}
MODELS = ("danet", "ccnet", "isanet", "nonlocalnet", "fcn")


def plan(dry_run):
    """The settings and the prioritised case lists (the same code paths in both modes)."""
    if dry_run:
        return dict(backbone="resnet_tiny_v1c", infer_size=(64, 128), train_size=(64, 64),
                    batch=2, num_classes=5, warmup=1, repeat=2, matmul=256, budget={"engine": 120},
                    infer=[("danet", "float32", True), ("ccnet", "mixed_bfloat16", False)],
                    train=[("danet", "float32", True)],
                    reference_infer=[("danet", "float32"), ("ccnet", "bfloat16")],
                    reference_train=[("danet", "float32")],
                    mirrored=["--steps", "2", "--eval-every", "2", "--batch-size", "2",
                              "--backbone", "resnet_tiny", "--crop-size", "32x32"],
                    parallel=True)
    infer = [(m, "float32", True) for m in MODELS]
    infer += [(m, "mixed_bfloat16", True) for m in MODELS]
    infer += [("danet", "mixed_float16", True), ("danet", "float32", False),
              ("danet", "mixed_bfloat16", False), ("fcn", "float32", False)]
    infer += [(m, "mixed_float16", True) for m in MODELS if m != "danet"]
    train = [(m, p, True) for p in ("float32", "mixed_bfloat16") for m in ("danet", "ccnet",
                                                                        "isanet")]
    train += [("danet", "float32", False)]
    return dict(backbone="resnet101_v1c", infer_size=(1024, 2048), train_size=(512, 1024), batch=2,
                num_classes=19, warmup=2, repeat=5, matmul=8192,
                budget={"engine": 110, "reference": 45, "mirrored": 75},
                infer=infer, train=train,
                reference_infer=[(m, p) for p in ("float32", "bfloat16")
                                 for m in ("danet", "ccnet", "nonlocalnet", "fcn")],
                reference_train=[("danet", "float32"), ("danet", "bfloat16")],
                mirrored=["--steps", "60", "--eval-every", "60", "--batch-size", "8"],
                parallel=False)


# ---------------------------------------------------------------------------------------------
# Measurement helpers (run inside a worker)
# ---------------------------------------------------------------------------------------------
def median_seconds(fn, warmup, repeat):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def device_name(engine):
    if engine == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") \
            if gpus else "CPU"
    if engine == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"


def reset_peak_memory(engine):
    try:
        if engine == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                tf.config.experimental.reset_memory_stats("GPU:0")
        elif engine in ("torch", "reference"):
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
    except Exception:  # noqa: BLE001 - a missing statistic must not stop the run
        pass


def peak_memory(engine):
    """(bytes, what they are): the accelerator's peak since the last reset, else the
    process's peak RSS (CPU: a dry run's numbers are not comparable)."""
    import resource

    try:
        if engine == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return tf.config.experimental.get_memory_info("GPU:0")["peak"], "gpu peak"
        elif engine == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "gpu":  # JAX cannot reset it: the process's peak so far
                return device.memory_stats()["peak_bytes_in_use"], "gpu peak (process)"
        else:
            import torch

            if torch.cuda.is_available():
                return torch.cuda.max_memory_allocated(), "gpu peak"
    except Exception:  # noqa: BLE001
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu peak rss (process)"


def matmul_peak(engine, n, dtypes=("float32", "bfloat16")):
    """Measured n x n matmul TFLOP/s per dtype: the roof the models' FLOP/s are set against."""
    out = {}
    for dtype in dtypes:
        if engine == "tensorflow":
            import tensorflow as tf

            a = tf.random.normal((n, n), dtype=dtype)
            mm = tf.function(lambda: tf.linalg.matmul(a, a), jit_compile=True)
            seconds = median_seconds(lambda: mm().numpy().flat[0], 2, 5)
        elif engine == "jax":
            import jax
            import jax.numpy as jnp

            a = jnp.ones((n, n), dtype=dtype)
            mm = jax.jit(lambda x: x @ x)
            seconds = median_seconds(lambda: mm(a).block_until_ready(), 2, 5)
        else:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
            a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))

            def step():
                (a @ a).sum().item()

            seconds = median_seconds(step, 2, 5)
        out[dtype] = 2 * n**3 / seconds / 1e12
    return out


def attention_core_gflop(model, feature_size):
    """performance-anchors.md §4a: the attention core's GFLOPs (2 x MACs) of one image at the
    OS8 feature size ``(h, w)``, C = 512 (the mmseg head configs: DANet's PAM C' = C/8 plus
    its CAM; NonLocal C' = Cv = 256; CCNet two criss-cross passes, C' = C/8; ISANet 8x8
    groups, C' = 256, Cv = 512)."""
    h, w = feature_size
    n, c = h * w, 512
    flops = {"fcn": 0,
             "danet": 2 * n * n * (c // 8 + c) + 4 * n * c * c,
             "nonlocalnet": 2 * n * n * (256 + 256),
             "ccnet": 2 * (2 * n * (h + w - 1) * (c // 8 + c)),
             "isanet": 2 * n * (256 + c) * (n / 64 + 64)}[model]
    return flops / 1e9


def analytic_tflop(model, size, images=1, train=False):
    """Whole-model TFLOPs of ``images`` images of ``size`` (R-101-D8, mmseg head configs):
    performance-anchors.md §4d's totals at 1024x2048 less their attention core, scaled by the
    pixel count (the convolutions), plus the attention core at this size (§4a: DANet's and
    NonLocal's N^2 maps do not scale with the pixels); x3 for a training step (forward +
    backward). Reproduces §4d's 512x1024 and 512x512 totals
    (``tests/test_gpu_anchors_dry_run.py``)."""
    height, width = size
    convolutions = TFLOP_1024x2048[model] - attention_core_gflop(model, (128, 256)) / 1e3
    total = (convolutions * height * width / (1024 * 2048)
             + attention_core_gflop(model, (height // 8, width // 8)) / 1e3)
    return total * images * (3 if train else 1)


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------
def keras_worker(engine, spec):
    import keras
    import numpy as np

    from keras_segattn import models

    deadline = time.time() + spec["budget_s"]
    rng = np.random.default_rng(0)
    records = []

    def build(name, precision):
        keras.config.set_dtype_policy(precision)
        keras.utils.set_random_seed(0)
        return models.get(name, num_classes=spec["num_classes"], backbone=spec["backbone"],
                          output_stride=8)

    def run_case(kind, name, precision, jit, fn):
        record = dict(engine=engine, kind=kind, model=name, precision=precision, jit=jit)
        if time.time() > deadline:
            records.append(dict(record, status="skipped: time budget"))
            return
        try:
            record.update(fn())
            record["status"] = "ok"
        except Exception as error:  # noqa: BLE001 - record and go on with the next case
            record["status"] = f"error: {type(error).__name__}: {str(error)[:300]}"
        finally:
            keras.backend.clear_session()
        records.append(record)
        print(json.dumps(record), flush=True)

    def order(cases):
        if engine != "torch":
            return cases
        if spec["backbone"] == "resnet_tiny_v1c":  # dry run: the same cases, eager
            return list(dict.fromkeys((name, precision, False) for name, precision, _ in cases))
        return [c for c in cases if not c[2]] + [c for c in cases if c[2]]

    spec = dict(spec, train=order(spec["train"]), infer=order(spec["infer"]))
    for name, precision, jit in spec["train"]:  # training first: JAX's peak cannot be reset
        def train_case(name=name, precision=precision, jit=jit):
            h, w = spec["train_size"]
            model = build(name, precision)
            model.compile(metrics=[], jit_compile=jit)
            x = rng.uniform(0, 255, (spec["batch"], h, w, 3)).astype("float32")
            y = rng.integers(0, spec["num_classes"], (spec["batch"], h, w)).astype("int32")
            reset_peak_memory(engine)
            start = time.perf_counter()
            model.train_on_batch(x, y)  # build + compile
            first = time.perf_counter() - start
            seconds = median_seconds(lambda: model.train_on_batch(x, y), spec["warmup"],
                                     spec["repeat"])
            memory, memory_kind = peak_memory(engine)
            tflop = analytic_tflop(name, (h, w), spec["batch"], train=True)
            return dict(size=[h, w], batch=spec["batch"], first_call_s=first,
                        step_ms=seconds * 1e3, peak_memory_gb=memory / 2**30,
                        memory_kind=memory_kind, tflop=tflop, tflops=tflop / seconds)

        run_case("train", name, precision, jit, train_case)

    for name, precision, jit in spec["infer"]:
        def infer_case(name=name, precision=precision, jit=jit):
            h, w = spec["infer_size"]
            model = build(name, precision)
            model.compile(metrics=[], jit_compile=jit)
            x = rng.uniform(0, 255, (1, h, w, 3)).astype("float32")
            reset_peak_memory(engine)
            start = time.perf_counter()
            model.predict_on_batch(x)
            first = time.perf_counter() - start
            seconds = median_seconds(lambda: model.predict_on_batch(x), spec["warmup"],
                                     spec["repeat"])
            memory, memory_kind = peak_memory(engine)
            tflop = analytic_tflop(name, (h, w))
            return dict(size=[h, w], batch=1, first_call_s=first, fps=1 / seconds,
                        peak_memory_gb=memory / 2**30, memory_kind=memory_kind, tflop=tflop,
                        tflops=tflop / seconds)

        run_case("infer", name, precision, jit, infer_case)
    return records


def reference_worker(spec):
    """The PyTorch modules written from mmseg's (tests/torch_mmseg_reference.py), NCHW,
    channels-first, cudnn; bfloat16 through ``torch.autocast``."""
    import numpy as np
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import torch_mmseg_reference as ref

    device = "cuda" if torch.cuda.is_available() else "cpu"
    deadline = time.time() + spec["budget_s"]
    tiny = spec["backbone"] == "resnet_tiny_v1c"
    records = []

    def build(name):
        torch.manual_seed(0)
        backbone = ref.ResNetV1c(
            block="basic_block" if tiny else "block",
            stage_blocks=(1, 1, 1, 1) if tiny else (3, 4, 23, 3),
            base_channels=16 if tiny else 64, stem_channels=16 if tiny else 64,
            **ref.d8_config(8))
        c_in = 128 if tiny else 2048
        c = 32 if tiny else 512
        k = spec["num_classes"]
        head = {"fcn": lambda: ref.FCNHead(c_in, c, k),
                "danet": lambda: ref.DAHead(c_in, c, c // 8, k),
                "ccnet": lambda: ref.CCHead(c_in, c, k),
                "nonlocalnet": lambda: ref.NLHead(c_in, c, k)}[name]()
        aux = ref.FCNHead(c_in // 2, c // 2, k, num_convs=1, concat_input=False)
        return ref.EncoderDecoder(backbone, head, aux).to(device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def run_case(kind, name, dtype, fn):
        record = dict(engine="pytorch-reference", kind=kind, model=name,
                      precision="float32" if dtype == "float32" else "autocast bfloat16",
                      jit=False)
        if time.time() > deadline:
            records.append(dict(record, status="skipped: time budget"))
            return
        try:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype != "float32"):
                record.update(fn())
            record["status"] = "ok"
        except Exception as error:  # noqa: BLE001
            record["status"] = f"error: {type(error).__name__}: {str(error)[:300]}"
        records.append(record)
        print(json.dumps(record), flush=True)

    rng = np.random.default_rng(0)
    for name, dtype in spec["reference_train"]:
        def train_case(name=name):
            h, w = spec["train_size"]
            model = build(name).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            x = torch.from_numpy(rng.normal(size=(spec["batch"], 3, h, w)).astype("float32"))
            y = torch.from_numpy(rng.integers(0, spec["num_classes"], (spec["batch"], h, w)))
            x, y = x.to(device), y.to(device)

            def step():
                optimizer.zero_grad(set_to_none=True)
                outputs = model(x)
                loss = sum(torch.nn.functional.cross_entropy(v.float(), y, ignore_index=255)
                           for v in outputs.values())
                loss.backward()
                optimizer.step()
                sync()

            reset_peak_memory("reference")
            seconds = median_seconds(step, spec["warmup"], spec["repeat"])
            memory, memory_kind = peak_memory("reference")
            tflop = analytic_tflop(name, (h, w), spec["batch"], train=True)
            return dict(size=[h, w], batch=spec["batch"], step_ms=seconds * 1e3,
                        peak_memory_gb=memory / 2**30, memory_kind=memory_kind, tflop=tflop,
                        tflops=tflop / seconds)

        run_case("train", name, dtype, train_case)

    for name, dtype in spec["reference_infer"]:
        def infer_case(name=name):
            h, w = spec["infer_size"]
            model = build(name).eval()
            x = torch.from_numpy(rng.normal(size=(1, 3, h, w)).astype("float32")).to(device)

            def step():
                with torch.no_grad():
                    model(x)["logits"].argmax(1).cpu()

            reset_peak_memory("reference")
            seconds = median_seconds(step, spec["warmup"], spec["repeat"])
            memory, memory_kind = peak_memory("reference")
            tflop = analytic_tflop(name, (h, w))
            return dict(size=[h, w], batch=1, fps=1 / seconds, peak_memory_gb=memory / 2**30,
                        memory_kind=memory_kind, tflop=tflop, tflops=tflop / seconds)

        run_case("infer", name, dtype, infer_case)
    return records


def worker_main(engine, spec_path, out_path):
    with open(spec_path) as f:
        spec = json.load(f)
    start = time.time()
    backend = "torch" if engine == "reference" else engine
    result = {"engine": engine, "device": device_name(backend),
              "matmul_peak_tflops": matmul_peak(backend, spec["matmul"])}
    result["records"] = (reference_worker(spec) if engine == "reference"
                         else keras_worker(engine, spec))
    result["versions"] = versions(backend)
    result["seconds"] = time.time() - start
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)


def versions(backend):
    import importlib

    names = ["keras", {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]]
    out = {}
    for name in names:
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            pass
    return out


# ---------------------------------------------------------------------------------------------
# Coordinator
# ---------------------------------------------------------------------------------------------
def run_engine(engine, spec, workdir, timeout):
    spec_path = os.path.join(workdir, f"{engine}_spec.json")
    out_path = os.path.join(workdir, f"{engine}.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ, KERAS_BACKEND="torch" if engine == "reference" else engine,
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(
                   [ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX: measure, do not reserve
    start = time.time()
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", engine,
                               spec_path, out_path], env=env, capture_output=True, text=True,
                              timeout=timeout)
        status = "ok" if proc.returncode == 0 else f"exit code {proc.returncode}"
        tail = proc.stderr[-2000:] if proc.returncode else ""
    except subprocess.TimeoutExpired:
        status, tail = f"timed out after {timeout} s", ""
    result = {"engine": engine, "records": []}
    if os.path.exists(out_path):
        with open(out_path) as f:
            result = json.load(f)
    result.update(process_status=status, process_seconds=time.time() - start)
    if tail:
        result["stderr_tail"] = tail
    return result


def run_mirrored(arguments, workdir, timeout):
    """``keras-segattn train --distribution mirrored`` (TensorFlow), the card's path."""
    command = [sys.executable, "-m", "keras_segattn.cli", "train", "--distribution", "mirrored",
               "--output-dir", os.path.join(workdir, "mirrored_run"), "--no-tensorboard",
               "--sync-bn", *arguments]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(
                   os.pathsep))
    start = time.time()
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        status = "ok" if proc.returncode == 0 else f"exit code {proc.returncode}"
        output = (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        status, output = f"timed out after {timeout} s", ""
    result = {"command": " ".join(["keras-segattn", *command[3:]]), "status": status,
              "seconds": time.time() - start, "output_tail": output}
    config = os.path.join(workdir, "mirrored_run", "config.json")
    if os.path.exists(config):
        with open(config) as f:
            result["run"] = json.load(f).get("_run")
    metrics = os.path.join(workdir, "mirrored_run", "metrics.json")
    if os.path.exists(metrics):
        with open(metrics) as f:
            result["metrics"] = {k: v for k, v in json.load(f).items()
                                 if isinstance(v, (int, float))}
    return result


def run(args):
    settings = plan(args.dry_run)
    budget = settings.pop("budget")
    mirrored_arguments = settings.pop("mirrored")
    parallel = settings.pop("parallel")
    os.makedirs(args.out, exist_ok=True)
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
               "dry_run": args.dry_run, "host": platform.node(), "python": platform.python_version(),
               "settings": settings, "engines": {}}
    start = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        engines = [*args.backends, *(["reference"] if args.reference else [])]
        jobs = []
        for engine in engines:
            spec = dict(settings, budget_s=budget.get(engine, budget["engine"]) * args.budget_scale)
            print(f"== {engine}: budget {spec['budget_s']:.0f} s", flush=True)
            jobs.append((engine, spec))
        if args.mirrored:
            share = budget.get("mirrored", budget["engine"]) * args.budget_scale
            jobs.append(("mirrored", share))
        # A dry run starts every process at once (it checks code paths, not speed); the
        # GPU run measures one engine at a time.
        with concurrent.futures.ThreadPoolExecutor(len(jobs) if parallel else 1) as pool:
            futures = {}
            for engine, spec in jobs:
                if engine == "mirrored":
                    futures[engine] = pool.submit(run_mirrored, mirrored_arguments, workdir,
                                                  int(3 * spec) + 60)
                else:
                    futures[engine] = pool.submit(run_engine, engine, spec, workdir,
                                                  int(3 * spec["budget_s"]) + 120)
            for engine, future in futures.items():
                if engine == "mirrored":
                    results["mirrored"] = future.result()
                else:
                    results["engines"][engine] = future.result()
    results["seconds"] = time.time() - start
    with open(os.path.join(args.out, "gpu_anchors.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out, "gpu_anchors.md"), "w") as f:
        f.write(markdown(results))
    print(f"wrote {args.out}/gpu_anchors.json and gpu_anchors.md in {results['seconds']:.0f} s")
    return results


def markdown(results):
    lines = [f"# GPU anchors ({'dry run, CPU, tiny sizes' if results['dry_run'] else 'GPU'})",
             "", f"{results['date']}, host {results['host']}; settings: backbone "
             f"{results['settings']['backbone']}, inference {results['settings']['infer_size']}"
             f" batch 1, training {results['settings']['train_size']} batch "
             f"{results['settings']['batch']}.", ""]
    reference = {}
    for engine in results["engines"].values():
        for r in engine.get("records", []):
            if engine["engine"] == "reference" and r.get("status") == "ok":
                reference[(r["kind"], r["model"], r["precision"].split()[-1])] = r
    lines += ["| engine | device | matmul TFLOP/s fp32 / bf16 | process |", "|---|---|---|---|"]
    for engine in results["engines"].values():
        peak = engine.get("matmul_peak_tflops", {})
        lines.append(f"| {engine['engine']} | {engine.get('device', '?')} | "
                     f"{peak.get('float32', float('nan')):.3g} / "
                     f"{peak.get('bfloat16', float('nan')):.3g} | "
                     f"{engine.get('process_status')} in {engine.get('process_seconds', 0):.0f} s |")
    lines += ["", "| kind | model | engine | precision | compiled | fps or step ms | peak GB | "
              "TFLOP/s | vs PyTorch | mmseg V100 | status |", "|---|---|---|---|---|---:|---:|---:|"
              "---:|---:|---|"]
    for engine in results["engines"].values():
        for r in engine.get("records", []):
            ok = r.get("status") == "ok"
            value = (f"{r['fps']:.2f} fps" if r["kind"] == "infer" else
                     f"{r['step_ms']:.0f} ms") if ok else ""
            precision = "float32" if r["precision"] == "float32" else "bfloat16"
            ref = reference.get((r["kind"], r["model"], precision))
            ratio = ""
            if ok and ref and engine["engine"] != "reference":
                ratio = (f"{r['fps'] / ref['fps']:.2f}x fps" if r["kind"] == "infer" else
                         f"{r['step_ms'] / ref['step_ms']:.2f}x time")
            anchor = (f"{MMSEG_FPS[r['model']]} fps" if r["kind"] == "infer" else
                      f"{MMSEG_TRAIN_MEMORY_GB[r['model']]} GB")
            lines.append(
                f"| {r['kind']} | {r['model']} | {engine['engine']} | {r['precision']} | "
                f"{'yes' if r.get('jit') else 'no'} | {value} | "
                f"{r['peak_memory_gb']:.2f} | {r['tflops']:.2f} | {ratio} | {anchor} | "
                f"{r['status']} |" if ok else
                f"| {r['kind']} | {r['model']} | {engine['engine']} | {r['precision']} | "
                f"{'yes' if r.get('jit') else 'no'} | | | | | {anchor} | {r['status']} |")
    if "mirrored" in results:
        m = results["mirrored"]
        lines += ["", f"`{m['command']}`: {m['status']} in {m['seconds']:.0f} s; run "
                  f"{m.get('run')}; metrics {m.get('metrics')}"]
    lines += ["", "TFLOP/s: analytic FLOPs (performance-anchors.md §4: R-101-D8 convolutions "
              "scaled by pixels plus each head's attention core at its size, x3 for "
              "training) / measured time. Memory: `memory_kind` in the JSON (JAX cannot "
              "reset its peak: process peak; CPU: peak RSS)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, metavar=("ENGINE", "SPEC", "OUT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, resnet_tiny_v1c, tiny sizes: checks every code path in < 60 s")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "gpu"))
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the plain PyTorch models")
    parser.add_argument("--no-mirrored", dest="mirrored", action="store_false",
                        help="skip the keras-segattn train --distribution mirrored run")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply every engine's time budget (default 1: ~8 minutes)")
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(*args.worker)
        return
    run(args)


if __name__ == "__main__":
    main()

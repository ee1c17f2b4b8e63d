"""Attention layers on every backend, side by side with PyTorch versions of the official modules.

    python benchmarks/layer_benchmark.py                 # the full run (about an hour on 2 cores)
    python benchmarks/layer_benchmark.py --sizes 64 97 --layers cam pam
    python benchmarks/layer_benchmark.py --dry-run --out /tmp/bench   # tiny, seconds; CI

One command measures every layer of ``keras_segattn.layers`` that has an attention core on the
TensorFlow, JAX and PyTorch backends and, where there is one, the PyTorch implementation of
the official module in ``benchmarks/torch_layers.py`` ("official"), with the same weights
(the official state dict loaded with ``keras_segattn.convert.load_reference_weights``; the
outputs are compared, see ``max_rel_diff``). Each engine runs in its own worker process
(``KERAS_BACKEND`` is fixed per process) and the coordinator interleaves them call by call
in round-robin, so that a change in machine load hits every engine alike; the load average
and each call's CPU time / wall time are recorded.

Measured per layer, size and engine (batch 1, float32, ``--channels`` channels, square maps):

* time of one forward (inference: ``training=False``; ``torch.no_grad`` on torch) and one
  forward + backward (``training=True``; the gradients w.r.t. every trainable weight and the
  input for a fixed upstream gradient ``dy`` of the output, taken the same way on every
  engine: PyTorch ``y.backward(dy)`` on an input leaf made once, TensorFlow
  ``tape.gradient(y, ..., output_gradients=dy)``, JAX ``jax.vjp``; no loss tensor, no copy
  of the input), eager and compiled (TensorFlow ``tf.function(jit_compile=True)``,
  JAX ``jax.jit``, torch ``torch.compile``); median of ``--repeat`` after ``--warmup``;
* peak memory of a call, for the first call of a freshly built layer at that size ("first")
  and for a later call ("steady"): the peak of the bytes held in live tensors during the call
  minus those held before it, where the engine's allocator can say (TensorFlow: the
  requested bytes of the allocation and deallocation events its profiler records,
  ``tf.profiler.experimental``; PyTorch, ours and official alike: the allocation and free
  events of ``torch.profiler(profile_memory=True)``; JAX ``jax.jit``: the buffers XLA's
  buffer assignment allocates for a call, temporaries plus outputs, from the compiled
  executable's ``memory_analysis()``, the same for the first and later calls; a lower bound
  where XLA hands a fusion to a kernel library with its own scratch, so the RSS is kept
  beside it); for eager JAX, whose CPU client keeps no statistics, the peak RSS of the
  worker during the call minus its RSS just before (``/proc/self/clear_refs`` resets the
  peak; freed memory is returned with ``malloc_trim`` first), which also counts the
  compiler's memory on a first call. The RSS peak is recorded for PyTorch and JAX ``jit``
  too (``first_rss`` / ``steady_rss``): it
  adds glibc's heap behaviour (freed 18 MiB blocks kept or returned, depending on what the
  process freed before), which moves it by tens of MiB between identical calls.

Writes ``layers.json`` (every measurement), ``layers.md`` (tables) and ``layers_time.png`` /
``layers_memory.png`` (log-log against the number of positions) to ``--out``
(default ``benchmarks/results``). Analytic FLOPs follow ``performance-anchors.md`` section 4a.
"""

import argparse
import ctypes
import datetime
import functools
import gc
import inspect
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ENGINES = ("official", "tensorflow", "jax", "torch")
KERAS_ENGINES = ("tensorflow", "jax", "torch")
MODES = ("fwd", "fwd+bwd", "fwd jit", "fwd+bwd jit")
OFFICIAL_MODES = ("fwd", "fwd+bwd")


# ---------------------------------------------------------------------------------------------
# The cases: our layer, the official module, analytic forward FLOPs (c = C, ck = C/8)
# ---------------------------------------------------------------------------------------------
def _keras(name, **kwargs):
    def build(channels):
        from keras_segattn import layers

        resolved = {k: (v(channels) if callable(v) else v) for k, v in kwargs.items()}
        return getattr(layers, name)(**resolved)

    return build


def _torch(name, *args, **kwargs):
    def build(channels):
        import torch_layers

        resolved = [a(channels) if callable(a) else a for a in args]
        return getattr(torch_layers, name)(*resolved, **kwargs)

    return build


def _same(c):
    return c


def _half(c):
    return c // 2


CASES = {
    "pam": dict(
        title="PositionAttention (DANet PAM)", keras=_keras("PositionAttention"),
        official=_torch("PAMModule", _same), quadratic=True,
        flops=lambda n, c: 2 * n * n * (c // 8 + c) + 2 * n * c * (c // 4 + c)),
    "cam": dict(
        title="ChannelAttention (DANet CAM)", keras=_keras("ChannelAttention"),
        official=_torch("CAMModule"), flops=lambda n, c: 4 * n * c * c),
    "nonlocal": dict(
        title="NonLocalBlock (mmcv NonLocal2d)", keras=_keras("NonLocalBlock"),
        official=_torch("NonLocal2d", _same), quadratic=True,
        flops=lambda n, c: 4 * n * n * (c // 2) + 2 * n * c * (3 * c // 2) + 2 * n * (c // 2) * c),
    "cca": dict(
        title="CrissCrossAttention, R=1", keras=_keras("CrissCrossAttention"),
        official=_torch("CrissCross", _same),
        flops=lambda n, c: 2 * n * (2 * n ** 0.5 - 1) * (c // 8 + c) + 2 * n * c * (c // 4 + c)),
    "rcca": dict(
        title="CrissCrossAttention, R=2 (shared weights)", keras=_keras("CrissCrossAttention"),
        official=_torch("RecurrentCrissCross", _same), passes=2, official_prefix="cca.",
        flops=lambda n, c: 2 * (2 * n * (2 * n ** 0.5 - 1) * (c // 8 + c) + 2 * n * c * (c // 4 + c))),
    "efficient": dict(
        title="EfficientAttention (dk=64, dv=C)",
        keras=_keras("EfficientAttention", key_channels=64, value_channels=_same),
        official=_torch("Efficient", _same, 64, _same),
        flops=lambda n, c: 4 * n * 64 * c + 2 * n * c * (128 + c) + 2 * n * c * c),
    "linear_position": dict(
        title="LinearPositionAttention (LAM)", keras=_keras("LinearPositionAttention"),
        official=_torch("PositionLinear", _same),
        flops=lambda n, c: 4 * n * c * (c // 8) + 2 * n * c * (c // 4 + c)),
    "linear_channel": dict(
        title="LinearChannelAttention (LAM)", keras=_keras("LinearChannelAttention"),
        official=_torch("ChannelLinear"), flops=lambda n, c: 4 * n * c * c),
    "isa": dict(
        title="InterlacedSparseAttention (8x8, C'=C/2)",
        keras=_keras("InterlacedSparseAttention", key_channels=_half, value_channels=_same,
                     output_channels=_same),
        official=_torch("ISABlock", _same, _half, _same, _same),
        flops=lambda n, c: (2 * n * (c // 2 + c) * (n / 64 + 64)
                            + 2 * (2 * n * c * (c // 2) * 2 + 2 * n * (c // 2) ** 2 * 2
                                   + 2 * n * c * c * 2))),
    "fla": dict(
        title="FullyAttentional (FLANet, incl. 3x3 conv)", keras=_keras("FullyAttentional"),
        official=_torch("FullyAttentional", _same),
        flops=lambda n, c: 8 * n * c * c + 2 * n * c * c * 9),
    "caa": dict(
        title="ChannelizedAxialAttention (no PyTorch reference)",
        keras=_keras("ChannelizedAxialAttention", filters=_same, key_channels=64), official=None,
        flops=lambda n, c: 2 * n * 2 * n ** 0.5 * 64 + 3 * n * 2 * n ** 0.5 * c
        + 2 * n * c * (128 + c)),
}


# ---------------------------------------------------------------------------------------------
# Memory and load probes (Linux /proc)
# ---------------------------------------------------------------------------------------------
_TF_MEMORY = False  # set in the TensorFlow worker
_TORCH_MEMORY = False  # set in the PyTorch workers (ours and official)
try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: no trimming
    _LIBC = None


def _status_kib(field):
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(match.group(1)) if match else 0


def _release_memory():
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def measure_peak(fn):
    """``(result, seconds, cpu_seconds, peak_bytes, peak_rss_bytes)`` of one call of ``fn``.

    ``peak_bytes``: the peak of the bytes in live tensors during the call above those live
    before it, from the engine's allocation events (TensorFlow's and PyTorch's profilers); on
    JAX, the peak RSS above the RSS before. ``peak_rss_bytes``: the RSS peak
    (``None`` on TensorFlow, whose allocator keeps freed memory: after its first call the RSS
    no longer moves).
    """
    _release_memory()
    if _TF_MEMORY:
        (result, seconds, cpu), peak = _tensorflow_allocation_peak(fn)
        return result, seconds, cpu, peak, None
    before = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM
        resettable = True
    except OSError:
        resettable = False
    if _TORCH_MEMORY:
        (result, seconds, cpu), peak = _torch_allocation_peak(fn)
    else:
        result, seconds, cpu = timed(fn)
    rss = _status_kib("VmHWM") if resettable else None
    rss = max(0, rss - before) * 1024 if rss is not None else None
    return result, seconds, cpu, (peak if _TORCH_MEMORY else rss), rss


def _torch_allocation_peak(fn):
    """``(timed(fn), peak)``: the highest running sum of PyTorch's CPU allocation (+) and free
    (-) events during the call, i.e. the peak of live tensor bytes above those live before."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        measured = timed(fn)
    events = sorted((e.start_ns(), e.nbytes()) for e in profiler.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return measured, peak


def _tensorflow_allocation_peak(fn):
    """``(timed(fn), peak)``: the highest running sum of the requested bytes of TensorFlow's
    allocation (+) and deallocation (-) events during the call, from its profiler.

    Not the allocator's own statistics (``tf.config.experimental.get_memory_info``): its BFC
    allocator hands out whole chunks, and on the CPU a chunk can be far larger than the tensor
    (an 18.4 MiB tensor took a 22.9 MiB chunk, a 38.1 MiB one a 64 MiB chunk), so its peak is
    not comparable with PyTorch's live bytes.

    The profiler records these events only from TensorFlow's BFC allocator, which TensorFlow
    uses on the CPU when oneDNN is enabled (``TF_ENABLE_ONEDNN_OPTS``; by default only on
    CPUs with AVX-512's neural-network features) or when ``TF_CPU_ALLOCATOR_USE_BFC=true`` is
    set before it starts, as the benchmark's TensorFlow worker does; on an AVX2-only EPYC
    (oneDNN off by default there) every peak read 0 without it.
    """
    import glob
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            measured = timed(fn)
        finally:
            tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
            with open(path, "rb") as f:
                space.MergeFromString(f.read())
    signs = {"MemoryAllocation": 1, "MemoryDeallocation": -1}
    events = []
    for plane in space.planes:
        requested = [k for k, v in plane.stat_metadata.items() if v.name == "requested_bytes"]
        kinds = {k: signs[v.name] for k, v in plane.event_metadata.items() if v.name in signs}
        for line in plane.lines:
            for event in line.events:
                if event.metadata_id in kinds:
                    nbytes = next((s.int64_value or s.uint64_value for s in event.stats
                                   if s.metadata_id in requested), 0)
                    events.append((line.timestamp_ns * 1000 + event.offset_ps,
                                   kinds[event.metadata_id] * nbytes))
    if not events and os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() not in ("1", "true"):
        raise RuntimeError("TensorFlow's profiler recorded no allocation events: set "
                           "TF_CPU_ALLOCATOR_USE_BFC=true before TensorFlow starts (it records "
                           "them only from its BFC allocator)")
    running = peak = 0
    for _, nbytes in sorted(events):
        running += nbytes
        peak = max(peak, running)
    return measured, peak


def _xla_buffer_peak(jitted, *args):
    """Live bytes of one call of a ``jax.jit`` function: XLA's buffer assignment, i.e. its
    temporaries plus its outputs (not aliasing an argument), from the compiled executable.

    XLA on the CPU allocates these buffers for a call: the quantity PyTorch's and TensorFlow's
    allocation-event peaks measure. It is a lower bound where XLA hands a fusion to a kernel
    library (``__ynn_fusion``, e.g. a matmul-softmax-matmul chain): the library's own scratch
    is not in the buffer assignment. JAX has no allocation statistics on the CPU; its process
    RSS (kept in the JSON as ``rss``) counts that scratch, and also the compiler's memory on
    the first call and what the allocator keeps after a call.
    """
    stats = jitted.lower(*args).compile().memory_analysis()
    return stats.temp_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn):
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    return result, seconds, _cpu_seconds() - cpu0


# ---------------------------------------------------------------------------------------------
# Workers: one process per engine, JSON commands on stdin, JSON replies on stdout
# ---------------------------------------------------------------------------------------------
class OfficialRunner:
    """The PyTorch implementations of the official modules (NCHW, eager)."""

    def __init__(self):
        import torch

        self.torch = torch
        sys.path.insert(0, HERE)

    def prepare(self, case, channels, size, seed, weights_path):
        import torch_layers

        torch = self.torch
        spec = CASES[case]
        module = torch_layers.randomize(spec["official"](channels), seed=seed)
        state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
        prefix = spec.get("official_prefix", "")
        np.savez(weights_path, **{k[len(prefix):]: v for k, v in state.items()})
        x, dy = inputs(size, channels, seed)
        self.module = module
        self.x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        self.dy = torch.from_numpy(np.ascontiguousarray(dy.transpose(0, 3, 1, 2)))

        def forward():
            module.eval()
            with torch.no_grad():
                return module(self.x)

        # The input is a leaf that requires a gradient, made once: a clone in each call would
        # add the input's size to the call's peak memory (TensorFlow and JAX watch the input
        # as it is).
        x_leaf = self.x.clone().requires_grad_(True)

        def forward_backward():
            module.train()
            module.zero_grad(set_to_none=True)
            x_leaf.grad = None
            y = module(x_leaf)
            y.backward(self.dy)
            return y.detach()

        self.functions = {"fwd": forward, "fwd+bwd": forward_backward}

    def output(self, y):
        return y.numpy().transpose(0, 2, 3, 1)


class KerasRunner:
    """Our layer on this process's Keras backend."""

    def __init__(self, backend):
        import keras

        self.keras = keras
        self.backend = backend
        if backend == "torch":
            import torch

            self.torch = torch
        elif backend == "jax":
            import jax

            self.jax = jax

    def prepare(self, case, channels, size, seed, weights_path):
        from keras_segattn import convert

        keras = self.keras
        spec = CASES[case]
        keras.utils.set_random_seed(seed)
        layer = self.layer = spec["keras"](channels)
        layer.build((1, size, size, channels))
        if weights_path.endswith(".npz") and os.path.exists(weights_path):
            if spec["official"] is not None:
                with np.load(weights_path) as data:
                    convert.load_reference_weights(layer, {k: data[k] for k in data.files})
            else:
                with np.load(weights_path) as data:
                    layer.set_weights([data[f"arr_{i}"] for i in range(len(data.files))])
        elif spec["official"] is None:  # the first Keras engine writes the shared weights
            np.savez(weights_path, *[np.asarray(w) for w in layer.get_weights()])
        x, dy = inputs(size, channels, seed)
        self.passes = spec.get("passes", 1)
        self.functions = getattr(self, f"_functions_{self.backend}")(layer, x, dy)

    def _apply(self, layer, x, training):
        for _ in range(self.passes):
            x = layer(x, **self._training(training))
        return x

    def _training(self, training):
        """``{"training": training}`` if the layer's ``call`` takes it (``stateless_call``
        passes keyword arguments through)."""
        return {"training": training} if "training" in inspect.signature(self.layer.call).parameters else {}

    def _functions_tensorflow(self, layer, x, dy):
        import tensorflow as tf

        x, dy = tf.constant(x), tf.constant(dy)

        def forward(inputs):
            return self._apply(layer, inputs, False)

        def forward_backward(inputs):
            # The gradients for the upstream gradient dy, as PyTorch's y.backward(dy) (no
            # loss y * dy and its gradient, which would add their tensors to the peak).
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                y = self._apply(layer, inputs, True)
            return y, tape.gradient(y, [inputs] + list(layer.trainable_variables),
                                    output_gradients=dy)

        compiled_forward = tf.function(forward, jit_compile=True)
        compiled_backward = tf.function(forward_backward, jit_compile=True)
        return {
            "fwd": lambda: forward(x),
            "fwd+bwd": lambda: forward_backward(x)[0],
            "fwd jit": lambda: compiled_forward(x),
            "fwd+bwd jit": lambda: compiled_backward(x)[0],
        }

    def _functions_jax(self, layer, x, dy):
        jax = self.jax
        import jax.numpy as jnp

        x, dy = jnp.asarray(x), jnp.asarray(dy)
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def apply(trainable, inputs, training):
            for _ in range(self.passes):
                inputs, _ = layer.stateless_call(trainable, non_trainable, inputs,
                                                 **self._training(training))
            return inputs

        def forward(trainable, inputs):
            return apply(trainable, inputs, False)

        def gradient(trainable, inputs):
            # The gradients for the upstream gradient dy (a vector-Jacobian product), as
            # PyTorch's y.backward(dy).
            y, pullback = jax.vjp(lambda t, i: apply(t, i, True), trainable, inputs)
            return pullback(dy), y

        compiled_forward = jax.jit(forward)
        compiled_gradient = jax.jit(gradient)

        def ready(result):
            return jax.block_until_ready(result)

        # Compiled for the analysis once per case, when the first memory call asks.
        self.buffer_peaks = {
            "fwd jit": functools.cache(lambda: _xla_buffer_peak(compiled_forward, trainable, x)),
            "fwd+bwd jit": functools.cache(
                lambda: _xla_buffer_peak(compiled_gradient, trainable, x)),
        }
        return {
            "fwd": lambda: ready(self._apply(layer, x, False)),
            "fwd+bwd": lambda: ready(gradient(trainable, x))[1],
            "fwd jit": lambda: ready(compiled_forward(trainable, x)),
            "fwd+bwd jit": lambda: ready(compiled_gradient(trainable, x))[1],
        }

    def _functions_torch(self, layer, x, dy):
        torch = self.torch
        x, dy = torch.from_numpy(x), torch.from_numpy(dy)

        def forward(inputs):
            with torch.no_grad():
                return self._apply(layer, inputs, False)

        # The input is a leaf that requires a gradient, made once (as for the official
        # modules): a clone in each call would add the input's size to its peak memory.
        x_leaf = x.clone().requires_grad_(True)

        def forward_backward(inputs):
            for v in layer.trainable_variables:
                v.value.grad = None
            inputs.grad = None
            y = self._apply(layer, inputs, True)
            y.backward(dy)
            return y.detach()

        # Each case and size compiles its own static graphs, as XLA does. Without the reset,
        # the two functions below (the same code objects for every case) are recompiled for
        # each new layer until dynamo's recompile limit (8), after which it silently runs
        # them eagerly: in the earlier runs the torch.compile columns from the ninth case and
        # size on were eager times. ``dynamic=False``: the second size of a layer would
        # otherwise be compiled with symbolic shapes.
        torch._dynamo.reset()
        compiled_forward = torch.compile(
            lambda inputs: self._apply(layer, inputs, False), dynamic=False)
        compiled_training = torch.compile(
            lambda inputs: self._apply(layer, inputs, True), dynamic=False)

        def compiled_forward_backward(inputs):
            for v in layer.trainable_variables:
                v.value.grad = None
            inputs.grad = None
            y = compiled_training(inputs)
            y.backward(dy)
            return y.detach()

        def compiled_inference(inputs):
            with torch.no_grad():
                return compiled_forward(inputs)

        return {
            "fwd": lambda: forward(x),
            "fwd+bwd": lambda: forward_backward(x_leaf),
            "fwd jit": lambda: compiled_inference(x),
            "fwd+bwd jit": lambda: compiled_forward_backward(x_leaf),
        }

    def output(self, y):
        return np.asarray(self.keras.ops.convert_to_numpy(y))


def inputs(size, channels, seed):
    """The feature map ``x`` and the output gradient ``dy`` (NHWC float32), from ``seed``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, size, size, channels), dtype=np.float32)
    dy = rng.standard_normal((1, size, size, channels), dtype=np.float32)
    return x, dy


def worker_main(engine):
    """Serve commands from the coordinator until stdin closes."""
    out = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not corrupt the protocol
    global _TF_MEMORY, _TORCH_MEMORY
    runner = OfficialRunner() if engine == "official" else KerasRunner(engine)
    _TF_MEMORY = engine == "tensorflow"
    _TORCH_MEMORY = engine in ("torch", "official")
    if engine == "torch" or engine == "official":
        import torch

        threads = torch.get_num_threads()
    else:
        threads = os.cpu_count()
    reply = {"engine": engine, "pid": os.getpid(), "threads": threads}
    if engine != "official":
        import keras

        reply["keras"] = keras.__version__
    out.write(json.dumps(reply) + "\n")
    out.flush()
    for line in sys.stdin:
        command = json.loads(line)
        try:
            reply = handle(runner, command)
        except Exception as error:  # reported, the run goes on without this measurement
            reply = {"error": f"{type(error).__name__}: {str(error)[:400]}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def handle(runner, command):
    op = command["op"]
    if op == "prepare":
        _release_memory()
        runner.prepare(command["case"], command["channels"], command["size"], command["seed"],
                       command["weights"])
        return {"ok": True}
    if op == "call":
        fn = runner.functions[command["mode"]]
        if command.get("memory"):
            y, seconds, cpu, peak, rss = measure_peak(fn)
            buffer_peaks = getattr(runner, "buffer_peaks", {})
            if command["mode"] in buffer_peaks:  # jax.jit: XLA's buffer assignment
                peak = buffer_peaks[command["mode"]]()
        else:
            y, seconds, cpu = timed(fn)
            peak = rss = None
        reply = {"seconds": seconds, "cpu": cpu, "peak": peak, "rss": rss}
        if command.get("save"):
            np.save(command["save"], runner.output(y))
        del y
        return reply
    if op == "release":
        runner.functions = {}
        runner.layer = runner.module = None
        runner.buffer_peaks = {}
        _release_memory()
        return {"ok": True}
    raise ValueError(f"unknown op {op!r}")


class Worker:
    def __init__(self, engine, dry_run):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [ROOT, HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        if engine == "tensorflow":  # allocation events for the memory peaks (see above)
            env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
        if engine != "official":
            env["KERAS_BACKEND"] = engine
        if engine == "jax":  # one host device (the test runner may ask for two)
            env["XLA_FLAGS"] = ""
        self.engine = engine
        # the worker's log (backend start-up chatter) goes to a file, whose end is quoted if
        # the worker dies
        self.log = None if dry_run else tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", engine],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1,
            stderr=self.log)
        self.info = self._read()

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait(timeout=60)
            tail = ""
            if self.log is not None:
                self.log.seek(0)
                tail = " | ".join(self.log.read().strip().splitlines()[-3:])
            raise RuntimeError(f"worker {self.engine} exited (code {code}): {tail}")
        return json.loads(line)

    def ask(self, **command):
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)
        if self.log is not None:
            self.log.close()


# ---------------------------------------------------------------------------------------------
# Coordinator
# ---------------------------------------------------------------------------------------------
def modes_of(engine):
    return OFFICIAL_MODES if engine == "official" else MODES


def command_line():
    """This run's command line without ``--out DIR`` (no local paths in the results)."""
    arguments = sys.argv[1:]
    if "--out" in arguments:
        start = arguments.index("--out")
        del arguments[start:start + 2]
    return " ".join([os.path.basename(sys.argv[0])] + arguments)


def run(args):
    os.makedirs(args.out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="layer_benchmark_")
    engines = [e for e in ENGINES if e == "official" or e in args.backends]
    workers = {e: Worker(e, args.dry_run) for e in engines}
    results = {
        "command": command_line(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "workers": {e: w.info for e, w in workers.items()},
        "settings": {k: getattr(args, k) for k in ("sizes", "channels", "repeat", "warmup",
                                                     "seed", "backends", "modes", "torch_compile")},
        "load": [],
        "records": [],
    }
    try:
        for case in args.layers:
            spec = CASES[case]
            for size in args.sizes:
                if spec.get("quadratic") and size > args.max_quadratic_size:
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] {case} {size}x{size}", flush=True)
                results["records"].extend(
                    run_case(case, size, args, workers, workdir, results["load"]))
                write_outputs(results, args.out)
    finally:
        for worker in workers.values():
            worker.close()
    return results


def run_case(case, size, args, workers, workdir, load):
    spec = CASES[case]
    active = [e for e in workers if e != "official" or spec["official"] is not None]
    weights = os.path.join(workdir, f"{case}_{size}.npz")
    records = {}
    for engine in active:  # "official" first: it writes the weights the others load
        reply = workers[engine].ask(op="prepare", case=case, channels=args.channels, size=size,
                                    seed=args.seed, weights=weights)
        for mode in modes_of(engine):
            if mode not in args.modes or (engine == "torch" and "jit" in mode
                                          and not args.torch_compile):
                continue
            records[engine, mode] = {
                "case": case, "title": spec["title"], "size": size, "channels": args.channels,
                "positions": size * size, "flops": spec["flops"](size * size, args.channels),
                "engine": engine, "mode": mode, "times": [], "cpu": [], "first_peak": None,
                "steady_peak": None, "first_rss": None, "steady_rss": None, "first_seconds": None, "error": reply.get("error"),
            }
    # First calls (the build/trace/compile cost and its memory), each engine in turn; the
    # inference modes first (a training call updates the BN moving statistics).
    for (engine, mode), record in sorted(records.items(), key=lambda kv: "bwd" in kv[0][1]):
        if record["error"]:
            continue
        save = os.path.join(workdir, f"{case}_{size}_{engine}_{mode.replace(' ', '_')}.npy")
        reply = workers[engine].ask(op="call", mode=mode, memory=True, save=save)
        if "error" in reply:
            record["error"] = reply["error"]
            continue
        record["first_seconds"], record["first_peak"] = reply["seconds"], reply["peak"]
        record["first_rss"] = reply["rss"]
        record["output"] = save
    # Warm-up, then interleaved timed rounds: every (mode, engine) once per round.
    order = [key for key, record in records.items() if not record["error"]]
    for round_index in range(args.warmup + args.repeat):
        load.append(os.getloadavg()[0])
        for key in order:
            record = records[key]
            if record["error"]:
                continue
            reply = workers[key[0]].ask(op="call", mode=key[1])
            if "error" in reply:
                record["error"] = reply["error"]
            elif round_index >= args.warmup:
                record["times"].append(reply["seconds"])
                record["cpu"].append(reply["cpu"])
    for key in order:  # steady-state memory: one more call each, with the peak probe
        record = records[key]
        if not record["error"]:
            reply = workers[key[0]].ask(op="call", mode=key[1], memory=True)
            record["steady_peak"] = reply.get("peak")
            record["steady_rss"] = reply.get("rss")
    for engine in active:
        workers[engine].ask(op="release")
    # Parity: every output against the official one (or the first Keras engine's), inference
    # outputs against inference, training-mode outputs against training-mode.
    references = {}
    for (engine, mode), record in records.items():
        kind = "bwd" in mode
        if record.get("output") and (engine == "official" or kind not in references):
            references[kind] = np.load(record["output"])
    for (engine, mode), record in records.items():
        path = record.pop("output", None)
        reference = references.get("bwd" in mode)
        if path and reference is not None:
            y = np.load(path)
            record["max_rel_diff"] = float(np.max(np.abs(y - reference))
                                           / (np.max(np.abs(reference)) + 1e-30))
            os.remove(path)
        if record["times"]:
            record["median"] = statistics.median(record["times"])
            record["cpu_per_wall"] = sum(record["cpu"]) / sum(record["times"])
    return list(records.values())


def machine_info():
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1)) / 2**20, 1)
    except (OSError, AttributeError):
        pass
    return info


# ---------------------------------------------------------------------------------------------
# Reports: markdown tables and plots
# ---------------------------------------------------------------------------------------------
def _lookup(records):
    return {(r["case"], r["size"], r["engine"], r["mode"]): r for r in records}


def _ms(record):
    return f"{record['median'] * 1e3:.1f}" if record and record.get("median") else "–"


def _mib(value):
    return f"{value / 2**20:.0f}" if value is not None else "–"


def _ratio(ours, official):
    if not ours or not official or not ours.get("median") or not official.get("median"):
        return "–"
    return f"{ours['median'] / official['median']:.2f}"


def _ratio_range(ours, official):
    """Lowest and highest of the per-round ratios ``ours_i / official_i``: the calls of one
    round run back to back, so each ratio sees the same machine load."""
    if not ours or not official:
        return "–"
    ratios = [a / b for a, b in zip(ours.get("times", []), official.get("times", [])) if b]
    if not ratios:
        return "–"
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def markdown(results):
    records = results["records"]
    table = _lookup(records)
    cases = list(dict.fromkeys(r["case"] for r in records))
    sizes = sorted({r["size"] for r in records})
    engines = [e for e in KERAS_ENGINES if any(r["engine"] == e for r in records)]
    load = results["load"]
    lines = [
        "# Attention layers: keras_segattn on each backend vs the official PyTorch modules",
        "",
        f"`{results['command']}` ({results['date']}; {results['machine'].get('cpu', '?')}, "
        f"{results['machine']['cpus']} CPUs; batch 1, float32, {records[0]['channels'] if records else '?'} "
        f"channels; median of {results['settings']['repeat']} interleaved calls after "
        f"{results['settings']['warmup']} warm-ups).",
        "",
        f"Machine load (1-min load average at each round): min {min(load):.1f}, median "
        f"{statistics.median(load):.1f}, max {max(load):.1f}." if load else "",
        "",
        "## Time ratios: ours / official (forward | forward+backward)",
        "",
        "Below 1.00 means ours is faster. `jit`: TensorFlow XLA, `jax.jit`, `torch.compile`.",
        "",
    ]
    header = "| layer | size | official ms (fwd / fwd+bwd) | " + " | ".join(
        f"{e} eager | {e} jit" for e in engines) + " |"
    lines += [header, "|" + "---|" * (3 + 2 * len(engines))]
    for case in cases:
        for size in sizes:
            official_f = table.get((case, size, "official", "fwd"))
            official_b = table.get((case, size, "official", "fwd+bwd"))
            if not any(table.get((case, size, e, "fwd")) for e in engines):
                continue
            row = [records_title(records, case), f"{size}", f"{_ms(official_f)} / {_ms(official_b)}"]
            for e in engines:
                for suffix in ("", " jit"):
                    f = table.get((case, size, e, "fwd" + suffix))
                    b = table.get((case, size, e, "fwd+bwd" + suffix))
                    if official_f:
                        row.append(f"{_ratio(f, official_f)} \\| {_ratio(b, official_b)}")
                    else:
                        row.append(f"{_ms(f)} \\| {_ms(b)} ms")
            lines.append("| " + " | ".join(row) + " |")
    if engines:
        lines += ["", "## Spread of the ratios: lowest-highest of the rounds", "",
                  "Each timed round calls every engine once, back to back; the ratio of ours to "
                  "the official module within each round, forward | forward+backward: how far "
                  "single calls wander on this machine around the medians above.", "",
                  "| layer | size | " + " | ".join(f"{e} eager | {e} jit" for e in engines)
                  + " |", "|" + "---|" * (2 + 2 * len(engines))]
        for case in cases:
            for size in sizes:
                official_f = table.get((case, size, "official", "fwd"))
                official_b = table.get((case, size, "official", "fwd+bwd"))
                if not official_f or not any(table.get((case, size, e, "fwd")) for e in engines):
                    continue
                row = [records_title(records, case), f"{size}"]
                for e in engines:
                    for suffix in ("", " jit"):
                        row.append(
                            f"{_ratio_range(table.get((case, size, e, 'fwd' + suffix)), official_f)}"
                            f" \\| {_ratio_range(table.get((case, size, e, 'fwd+bwd' + suffix)), official_b)}")
                lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Absolute times (ms, median)", "",
              "| layer | size | engine | " + " | ".join(MODES) + " | GFLOP/s (fwd) | first call s |",
              "|" + "---|" * (6 + len(MODES))]
    for case in cases:
        for size in sizes:
            for e in ENGINES:
                recs = [table.get((case, size, e, m)) for m in MODES]
                if not any(recs):
                    continue
                fwd = recs[0]
                rate = (f"{fwd['flops'] / fwd['median'] / 1e9:.0f}" if fwd and fwd.get("median")
                        else "–")
                first = (f"{fwd['first_seconds']:.2f}" if fwd and fwd.get("first_seconds")
                         else "–")
                lines.append(f"| {records_title(records, case)} | {size} | {e} | "
                             + " | ".join(_ms(r) if r else "" for r in recs)
                             + f" | {rate} | {first} |")
    lines += ["", "## Peak memory of a call (MiB): first call / steady state", "",
              "Peak of the bytes in live tensors during the call minus those live before it, "
              "(TensorFlow: the requested bytes of its profiler's allocation events; official "
              "and torch: PyTorch's allocation events; `jax.jit`: XLA's buffer assignment, "
              "temporaries plus outputs, a lower bound where XLA hands a fusion to a kernel "
              "library that allocates its own scratch: compare the RSS table below). Eager JAX "
              "(no allocator statistics on CPU): peak RSS during the call minus the RSS before "
              "it, compiler memory included.", ""]
    lines += _memory_table(cases, sizes, table, records, "peak")
    rss_engines = ("official", "jax", "torch")
    if any(r.get("first_rss") is not None for r in records if r["engine"] in rss_engines):
        lines += ["", "## Peak RSS of a call, PyTorch and JAX engines (MiB): first call / steady "
                  "state", "",
                  "The same calls' peak RSS minus the RSS before them: the tensors above plus "
                  "glibc's heap behaviour (freed blocks kept or returned), and on JAX the "
                  "compiler's memory in a first call and the scratch of the kernels XLA calls.",
                  ""]
        lines += _memory_table(cases, sizes, table, records, "rss", engines=rss_engines)
    errors = [r for r in records if r.get("error")]
    if errors:
        lines += ["", "## Failed measurements", ""]
        lines += [f"- {r['case']} {r['size']} {r['engine']} {r['mode']}: {r['error']}" for r in errors]
    parity = [r.get("max_rel_diff") for r in records if r.get("max_rel_diff") is not None]
    if parity:
        lines += ["", f"Parity: every output within a max relative difference of {max(parity):.1e} "
                      "of the official module's (or, without one, of the first backend's)."]
    return "\n".join(lines) + "\n"


def _memory_table(cases, sizes, table, records, kind, engines=ENGINES):
    lines = ["| layer | size | engine | " + " | ".join(MODES) + " |", "|---|---|---|---|---|---|---|"]
    for case in cases:
        for size in sizes:
            for e in engines:
                recs = [table.get((case, size, e, m)) for m in MODES]
                if not any(recs):
                    continue
                cells = [f"{_mib(r[f'first_{kind}'])} / {_mib(r[f'steady_{kind}'])}" if r else ""
                         for r in recs]
                lines.append(f"| {records_title(records, case)} | {size} | {e} | "
                             + " | ".join(cells) + " |")
    return lines


def records_title(records, case):
    return next(r["title"] for r in records if r["case"] == case).split(" (")[0]


def plot(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in results["records"] if r.get("median")]
    cases = list(dict.fromkeys(r["case"] for r in records))
    if not cases:
        return []
    styles = {"official": ("k", "-"), "tensorflow": ("tab:orange", "--"), "jax": ("tab:green", "--"),
              "torch": ("tab:red", "--")}
    paths = []
    for what, key, unit in (("time", "median", "ms"), ("memory", "steady_peak", "MiB")):
        columns = min(4, len(cases))
        rows = -(-len(cases) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.3 * rows), squeeze=False)
        for ax, case in zip(axes.flat, cases):
            for engine in ENGINES:
                for mode in ("fwd", "fwd+bwd", "fwd jit", "fwd+bwd jit"):
                    points = sorted((r["positions"], r[key]) for r in records
                                    if r["case"] == case and r["engine"] == engine
                                    and r["mode"] == mode and r.get(key))
                    if not points:
                        continue
                    color, line = styles[engine]
                    scale = 1e3 if what == "time" else 1 / 2**20
                    marker = "o" if "bwd" in mode else "s"
                    ax.loglog([p[0] for p in points], [p[1] * scale for p in points], color=color,
                              linestyle=":" if "jit" in mode else line, marker=marker, markersize=3,
                              label=f"{engine} {mode}")
            ax.set_title(records_title(records, case), fontsize=9)
            ax.set_xlabel("positions H*W", fontsize=8)
            ax.set_ylabel(unit, fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(cases):]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncol=6, fontsize=7)
        figure.suptitle(f"Attention layers, {what} per call (batch 1, float32; log-log)", fontsize=10)
        figure.tight_layout(rect=(0, 0.06, 1, 0.97))
        path = os.path.join(out, f"layers_{what}.png")
        figure.savefig(path, dpi=90)
        plt.close(figure)
        paths.append(path)
    return paths


def write_outputs(results, out):
    with open(os.path.join(out, "layers.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out, "layers.md"), "w") as f:
        f.write(markdown(results))
    plot(results, out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--layers", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--sizes", type=int, nargs="*", default=[32, 48, 64, 97])
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--backends", nargs="*", default=list(KERAS_ENGINES), choices=KERAS_ENGINES)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-quadratic-size", type=int, default=97,
                        help="largest side for the N x N layers (PAM, non-local)")
    parser.add_argument("--no-torch-compile", dest="torch_compile", action="store_false",
                        help="skip the torch backend's jit modes (torch.compile adds up to about "
                             "a minute per layer and size on a 2-core CPU)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes and channels, one call each (checks the pipeline)")
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return None
    if args.dry_run:
        args.sizes, args.channels, args.repeat, args.warmup = [8, 12], 16, 1, 0
        args.torch_compile = False
    return run(args)


if __name__ == "__main__":
    main()

"""Run the test suite once per Keras backend, each in its own process.

``KERAS_BACKEND`` must be set before Keras is imported, so every backend gets a fresh
``python -m pytest``. The backends run at the same time (``--jobs``, default: all of them):
much of a test's time is single-threaded (tracing, compiling, Python), so on a 2-core machine
three processes finish sooner than three runs one after the other. Each backend's output is
kept in a log file and printed whole when that backend ends, so the outputs do not mix; each
backend has its own tensorflow-datasets folder and Keras home (``TFDS_DATA_DIR``,
``KERAS_HOME``, in a temporary folder) unless those are set.
Exits non-zero if any backend fails. Extra arguments go to pytest:

    python tests/run_backends.py                      # all three backends
    python tests/run_backends.py --backends jax -x tests/layers
    python tests/run_backends.py --jobs 1             # one backend after the other
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

BACKENDS = ("tensorflow", "jax", "torch")


def _start(backend, pytest_args, root, log, home, parallel):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    if parallel and backend == "torch":
        # PyTorch's OpenMP threads spin while they wait; next to two other busy processes on
        # a small machine, its default of one thread per core made a training step 15-20x
        # slower than one thread (benchmarks/RESULTS.md).
        env.setdefault("OMP_NUM_THREADS", "1")
    # Backends running at the same time must not prepare the same tfds dataset or fill the
    # same Keras cache at once: each gets its own (unless the caller chose one).
    for name, folder in (("TFDS_DATA_DIR", "tensorflow_datasets"), ("KERAS_HOME", "keras")):
        env.setdefault(name, os.path.join(home, folder))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if backend == "jax":
        # JAX's persistent compilation cache, for this run only: many tests compile the same
        # tiny model's train step (a new function each time, so JAX's in-memory cache misses),
        # and the command-line tests start new processes that compile it again.
        env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(home, "jax_cache"))
        env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # Two host devices for the JAX data-parallel tests (must be set before jax starts).
    env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *pytest_args]
    print(f"===== KERAS_BACKEND={backend}: {' '.join(command)} (started)", flush=True)
    return subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", default=",".join(BACKENDS),
        help="comma-separated subset of %(default)s",
    )
    parser.add_argument("--jobs", type=int, default=len(BACKENDS),
                        help="backends run at the same time (default: %(default)s)")
    args, pytest_args = parser.parse_known_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {list(BACKENDS)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    start = time.time()
    waiting, running, results = list(backends), {}, {}
    with tempfile.TemporaryDirectory(prefix="keras_segattn_backends_") as logs:
        while waiting or running:
            while waiting and len(running) < args.jobs:
                backend = waiting.pop(0)
                log = open(os.path.join(logs, f"{backend}.log"), "w+")
                home = os.path.join(logs, backend)
                parallel = args.jobs > 1 and len(backends) > 1
                running[backend] = (_start(backend, pytest_args, root, log, home, parallel),
                                    log, time.time())
            time.sleep(1)
            for backend, (process, log, began) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[backend]
                results[backend] = (process.returncode, time.time() - began)
                log.seek(0)
                print(f"\n===== KERAS_BACKEND={backend}: finished", flush=True)
                sys.stdout.write(log.read())
                sys.stdout.flush()
                log.close()

    print("\n===== summary")
    for backend in backends:
        code, seconds = results[backend]
        status = "passed" if code == 0 else f"FAILED (pytest exit code {code})"
        print(f"{backend:>10}: {status} in {seconds:.0f} s")
    print(f"{'all':>10}: {time.time() - start:.0f} s")
    return 0 if all(code == 0 for code, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

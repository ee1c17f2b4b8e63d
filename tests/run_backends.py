"""Run the test suite once per Keras backend, each in its own process.

``KERAS_BACKEND`` must be set before Keras is imported, so every backend gets a fresh
``python -m pytest``. Exits non-zero if any backend fails. Extra arguments go to pytest:

    python tests/run_backends.py                      # all three backends
    python tests/run_backends.py --backends jax -x tests/layers
"""

import argparse
import os
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", default=",".join(BACKENDS),
        help="comma-separated subset of %(default)s",
    )
    args, pytest_args = parser.parse_known_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {list(BACKENDS)}")

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = {}
    for backend in backends:
        env = dict(os.environ)
        env["KERAS_BACKEND"] = backend
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # Two host devices for the JAX data-parallel tests (must be set before jax starts).
        env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *pytest_args]
        print(f"\n===== KERAS_BACKEND={backend}: {' '.join(command)}", flush=True)
        start = time.time()
        results[backend] = (subprocess.call(command, cwd=root, env=env), time.time() - start)

    print("\n===== summary")
    for backend, (code, seconds) in results.items():
        status = "passed" if code == 0 else f"FAILED (pytest exit code {code})"
        print(f"{backend:>10}: {status} in {seconds:.0f} s")
    return 0 if all(code == 0 for code, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

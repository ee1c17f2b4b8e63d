import os

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--run-large", action="store_true", default=False,
        help="run tests marked `large` (slow, or needing the network / real datasets)",
    )


def pytest_configure(config):
    # Full tracebacks from Keras, so failures point at our code.
    import keras

    keras.config.disable_traceback_filtering()


def pytest_report_header(config):
    import keras

    return f"keras {keras.__version__}, backend {keras.backend.backend()} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND')})"


def _jax_device_count():
    import keras

    if keras.backend.backend() != "jax":
        return 0
    return len(keras.distribution.list_devices())


def pytest_collection_modifyitems(config, items):
    if any("two_jax_devices" in item.keywords for item in items) and _jax_device_count() < 2:
        skip_devices = pytest.mark.skip(
            reason="needs JAX with 2 devices (tests/run_backends.py sets "
                   "XLA_FLAGS=--xla_force_host_platform_device_count=2)")
        for item in items:
            if "two_jax_devices" in item.keywords:
                item.add_marker(skip_devices)
    if config.getoption("--run-large"):
        return
    skip_large = pytest.mark.skip(reason="large test: run with --run-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip_large)

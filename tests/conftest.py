import gc
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


@pytest.fixture(autouse=True, scope="module")
def _freeze_what_earlier_modules_left():
    """Collect, then move every object still alive into the garbage collector's permanent
    generation (``gc.freeze``) before each test module, so that later collections only walk
    what was made since.

    Why: what a process keeps grows test after test, and every full collection walks all of
    it. On TensorFlow most of it is never freed: each traced ``model.fit`` step registers a
    gradient function in TensorFlow's global gradient registry (``tf.distribute``'s
    ``all_reduce`` of the gradients is a ``tf.custom_gradient``, tensorflow/tensorflow#97697),
    which keeps the whole traced step graph alive (about 120 000 Python objects for the tiny
    FCN's ``fit``). After ``tests/models`` a TensorFlow process held 3.0 million objects and
    one ``gc.collect()`` (which ``keras.backend.clear_session()`` runs) took 2.4 s;
    ``tests/models`` on TensorFlow took 376 s without this fixture, 259 s with it. Only what
    outlived every earlier module is frozen (imported modules, session-scoped fixtures,
    TensorFlow's registered graphs); a frozen object is still freed when its last reference
    goes, only a frozen reference cycle would stay.
    """
    gc.collect()
    gc.freeze()
    yield


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

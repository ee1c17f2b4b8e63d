import json
import os
import subprocess
import sys

import keras
import pytest

from keras_segattn.training import distribution_scope, resolve_distribution

SCRIPT = os.path.join(os.path.dirname(__file__), "distributed_step_script.py")
BACKEND = keras.backend.backend()


def run_script(kind):
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, SCRIPT, kind], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(BACKEND == "torch", reason="torch: single device (no keras.distribution)")
def test_one_data_parallel_step_matches_single_device():
    kind = "mirrored" if BACKEND == "tensorflow" else "data_parallel"
    result = run_script(kind)
    assert result["kind"] == kind and result["replicas"] == 2
    assert result["moved"] > 1e-3  # the step did change the weights
    assert result["diff"] < 1e-5, result


def test_resolve_distribution():
    assert resolve_distribution("none") == "none"
    assert resolve_distribution("auto") == "none"  # CPU only: no accelerators
    with pytest.raises(ValueError, match="unknown distribution"):
        resolve_distribution("horovod")
    wrong = "data_parallel" if BACKEND != "jax" else "mirrored"
    with pytest.raises(ValueError, match="not available on the"):
        resolve_distribution(wrong)
    with distribution_scope("none") as info:
        assert info.num_replicas == 1


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TF only")
def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        with distribution_scope("multi_worker"):
            pass

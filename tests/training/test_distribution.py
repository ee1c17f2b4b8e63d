import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from distributed_common import global_batch, max_abs_diff, single_device_model
from keras_segattn.training import distribution_scope, resolve_distribution

HERE = os.path.dirname(__file__)
SCRIPT = os.path.join(HERE, "distributed_step_script.py")
MULTI_WORKER_SCRIPT = os.path.join(HERE, "multi_worker_script.py")
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
    if kind == "mirrored":  # inference of a batch of 3 with a model built under the strategy
        assert result["inference_rows"] == 3
        assert result["inference_diff"] < 1e-5 and result["inference_same_metrics"], result


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


def test_train_needs_global_batch_divisible_by_replicas(tmp_path, monkeypatch):
    """distribution.py's contract: the global batch must divide by the replica count (a
    remainder makes the shards unequal, see the multi-worker test); ``train`` refuses it
    before building anything."""
    from keras_segattn.training import TrainConfig, train
    from keras_segattn.training import distribution as distribution_lib

    @contextlib.contextmanager
    def two_workers(kind="auto", devices=None):
        yield distribution_lib.DistributionInfo("multi_worker", 2)

    monkeypatch.setattr(distribution_lib, "distribution_scope", two_workers)
    config = TrainConfig(batch_size=5, steps=1, eval_every=1, num_classes=4, crop_size=(16, 16),
                         output_dir=str(tmp_path), tensorboard=False)
    with pytest.raises(ValueError, match="batch_size 5 .* divisible by the 2 replicas"):
        train(config, train_dataset=[global_batch(5)])


def test_train_creates_multi_worker_strategy_before_the_datasets(tmp_path, monkeypatch):
    """TF configures collective ops only before its runtime starts, and building the tf.data
    pipelines starts it: ``train`` must create the strategy first."""
    from keras_segattn.training import TrainConfig, train, trainer
    from keras_segattn.training import distribution as distribution_lib

    calls = []
    monkeypatch.setattr(distribution_lib, "resolve_distribution", lambda kind: "multi_worker")
    monkeypatch.setattr(distribution_lib, "multi_worker_strategy", lambda: calls.append("strategy"))

    def build_datasets(config, batch_size, start_step=0):
        calls.append("datasets")
        raise RuntimeError("stop here")

    monkeypatch.setattr(trainer, "build_datasets", build_datasets)
    with pytest.raises(RuntimeError, match="stop here"):
        train(TrainConfig(steps=1, eval_every=1, output_dir=str(tmp_path), tensorboard=False))
    assert calls == ["strategy", "datasets"]


def test_only_the_chief_writes_to_output_dir(tmp_path, monkeypatch):
    from keras_segattn.training import TrainConfig, train, trainer
    from keras_segattn.training import distribution as distribution_lib

    cluster = {"worker": ["localhost:1", "localhost:2"]}
    out = str(tmp_path / "run")
    worker = lambda i: {"cluster": cluster, "task": {"type": "worker", "index": i}}  # noqa: E731
    assert distribution_lib.worker_output_dir(out, worker(0)) == out
    assert distribution_lib.worker_output_dir(out, worker(1)) == os.path.join(
        out, "workers", "worker_1")
    with_chief = {"cluster": dict(cluster, chief=["localhost:0"]),
                  "task": {"type": "worker", "index": 0}}
    assert distribution_lib.worker_output_dir(out, with_chief) == os.path.join(
        out, "workers", "worker_0")
    with_chief["task"] = {"type": "chief", "index": 0}
    assert distribution_lib.worker_output_dir(out, with_chief) == out
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribution_lib.worker_output_dir(out) == out

    # train() redirects a non-chief worker before writing anything.
    monkeypatch.setenv("TF_CONFIG", json.dumps(worker(1)))
    monkeypatch.setattr(distribution_lib, "resolve_distribution", lambda kind: "multi_worker")
    monkeypatch.setattr(distribution_lib, "multi_worker_strategy", lambda: None)
    seen = []

    def build_datasets(config, batch_size, start_step=0):
        seen.append(config.output_dir)
        raise RuntimeError("stop here")

    monkeypatch.setattr(trainer, "build_datasets", build_datasets)
    with pytest.raises(RuntimeError, match="stop here"):
        train(TrainConfig(steps=1, eval_every=1, output_dir=out, tensorboard=False))
    assert seen == [os.path.join(out, "workers", "worker_1")]
    assert not os.path.exists(out)  # nothing written: the set-up failed (no empty folders)


def test_prepare_dataset_shards_multi_worker_input_by_data():
    """Under multi_worker a tf.data input is sharded by DATA (each worker reads the same
    global batches); tf.data's AUTO policy would shard by file and fail on one-file
    datasets such as the built-in synthetic one."""
    import tensorflow as tf

    from keras_segattn.training.distribution import prepare_dataset

    dataset = tf.data.Dataset.range(4).batch(2)
    prepared = prepare_dataset(dataset, "multi_worker")
    assert (prepared.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.DATA)
    assert list(prepared.as_numpy_iterator())[1].tolist() == [2, 3]
    for kind in ("none", "mirrored", "data_parallel"):
        assert prepare_dataset(dataset, kind) is dataset
    arrays = (np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 4)))
    assert prepare_dataset(arrays, "multi_worker") is arrays


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TF only")
def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        with distribution_scope("multi_worker"):
            pass


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_workers(out_dir, timeout=180):
    """Start the 2 workers of multi_worker_script.py; return their JSON reports and weights.

    Both are killed when both have reported, when one exits early, or at ``timeout``:
    a hang (e.g. a worker waiting for a collective) cannot block the suite.
    """
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs, outs, logs = [], [], []
    try:
        for index in range(2):
            env = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="",
                       TF_CPP_MIN_LOG_LEVEL="3",
                       TF_CONFIG=json.dumps({"cluster": cluster,
                                             "task": {"type": "worker", "index": index}}))
            out = os.path.join(out_dir, f"worker{index}")
            log = open(out + ".log", "w")
            outs.append(out)
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, MULTI_WORKER_SCRIPT, out], env=env,
                                          stdout=log, stderr=subprocess.STDOUT))
        deadline = time.time() + timeout
        while not all(os.path.exists(o + ".json") for o in outs):
            failed = [i for i, p in enumerate(procs) if p.poll() is not None
                      and not os.path.exists(outs[i] + ".json")]
            if failed or time.time() > deadline:
                for log in logs:
                    log.flush()
                tails = {i: open(outs[i] + ".log").read()[-3000:] for i in range(2)}
                reason = f"worker(s) {failed} exited" if failed else f"timeout after {timeout} s"
                pytest.fail(f"multi-worker run failed: {reason}; logs: {tails}")
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs:
            log.close()
    reports = []
    for out in outs:
        with open(out + ".json") as f:
            report = json.load(f)
        arrays = np.load(out + ".npz")
        weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        n = report["num_weights"]
        report["initial"], report["after_steps"], report["after_odd"] = (
            weights[:n], weights[n:2 * n], weights[2 * n:])
        reports.append(report)
    return reports


@pytest.mark.skipif(BACKEND != "tensorflow", reason="MultiWorkerMirroredStrategy is TF only")
def test_multi_worker_steps_match_single_device(tmp_path):
    """2 workers on localhost (CPU) through distribution_scope: same weights on both, equal
    to the single-device steps; a global batch not divisible by the workers is split
    3/2 and each shard counts equally (what ``train`` refuses, see distribution.py)."""
    worker0, worker1 = run_workers(str(tmp_path))
    for report in (worker0, worker1):
        assert report["kind"] == "multi_worker" and report["replicas"] == 2
    assert max_abs_diff(worker0["initial"], worker1["initial"]) == 0.0
    # Each worker trained on its contiguous half of every global batch of 4.
    images, labels = global_batch(8)
    firsts = images[:, 0, 0, 0]
    np.testing.assert_allclose(worker0["seen_steps"], [firsts[0:2].sum(), firsts[4:6].sum()],
                               rtol=1e-5)
    np.testing.assert_allclose(worker1["seen_steps"], [firsts[2:4].sum(), firsts[6:8].sum()],
                               rtol=1e-5)
    # Two all-reduced SGD + momentum steps: identical workers, equal to the single-device steps.
    assert max_abs_diff(worker0["after_steps"], worker1["after_steps"]) < 1e-7
    reference = single_device_model(worker0["initial"])
    reference.fit(images, labels, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert max_abs_diff(worker0["initial"], reference.get_weights()) > 1e-3  # they did move
    assert max_abs_diff(worker0["after_steps"], reference.get_weights()) < 1e-5

    # Global batch 5: shards of 3 and 2 images; the workers still agree, but the step is the
    # mean of the two shard losses (each image of the 3-shard weighs 5/6, of the 2-shard
    # 5/4), not the single-device step over the 5 images.
    odd_images, odd_labels = global_batch(5, seed=1)
    odd_firsts = odd_images[:, 0, 0, 0]
    np.testing.assert_allclose(worker0["seen_odd"], [odd_firsts[:3].sum()], rtol=1e-5)
    np.testing.assert_allclose(worker1["seen_odd"], [odd_firsts[3:].sum()], rtol=1e-5)
    assert max_abs_diff(worker0["after_odd"], worker1["after_odd"]) < 1e-7
    plain = single_device_model(worker0["initial"])
    plain.fit(images, labels, batch_size=4, epochs=1, shuffle=False, verbose=0)
    plain.fit(odd_images, odd_labels, batch_size=5, epochs=1, shuffle=False, verbose=0)
    assert max_abs_diff(worker0["after_odd"], plain.get_weights()) > 1e-3
    shard_weights = np.broadcast_to(np.array([5 / 6] * 3 + [5 / 4] * 2, "float32")[:, None, None],
                                    odd_labels.shape)
    reference.fit(odd_images, odd_labels, sample_weight=np.ascontiguousarray(shard_weights),
                  batch_size=5, epochs=1, shuffle=False, verbose=0)
    assert max_abs_diff(worker0["after_odd"], reference.get_weights()) < 1e-5

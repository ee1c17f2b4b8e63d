"""Synchronized BatchNorm (``--sync-bn``): one step on 2 replicas equals the single-device step
on the whole global batch, weights and BN moving statistics alike (TF MirroredStrategy on 2
logical CPUs with SyncBN; JAX DataParallel on 2 host devices with plain BN), while the
unsynchronized mirrored step does not; and the trainer / CLI hooks."""

import argparse
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

HERE = os.path.dirname(__file__)
SCRIPT = os.path.join(HERE, "sync_bn_script.py")
BACKEND = keras.backend.backend()


def one_step(mode, tmp_path):
    """Run ``sync_bn_script.py mode`` in a fresh process; returns its ``.npz`` contents."""
    out = str(tmp_path / f"{mode}.npz")
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, SCRIPT, mode, out], env=env, capture_output=True,
                          text=True, timeout=240, cwd=HERE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


def max_diffs(result, reference):
    """{variable path: max |difference| after the step}."""
    return {str(path): float(np.abs(result[f"after_{i}"] - reference[f"after_{i}"]).max())
            for i, path in enumerate(reference["paths"])}


@pytest.mark.skipif(BACKEND == "torch", reason="torch: single device (no keras.distribution)")
def test_two_replica_step_equals_the_whole_batch_step(tmp_path):
    single = one_step("single", tmp_path)
    moved = max(float(np.abs(single[f"after_{i}"] - single[f"initial_{i}"]).max())
                for i in range(len(single["paths"])))
    assert moved > 0.1  # the step changed the weights and the moving statistics
    statistics = [p for p in map(str, single["paths"]) if "moving" in p]
    assert statistics == ["block/bn/moving_mean", "block/bn/moving_variance",
                          "bn2/moving_mean", "bn2/moving_variance"]

    parallel = one_step("synced" if BACKEND == "tensorflow" else "data_parallel", tmp_path)
    assert int(parallel["replicas"]) == 2
    # TF: both BNs (the nested one too) synchronized; JAX: nothing to change.
    assert int(parallel["synchronized_layers"]) == (2 if BACKEND == "tensorflow" else 0)
    diffs = max_diffs(parallel, single)
    assert max(diffs.values()) < 1e-5, diffs

    if BACKEND == "tensorflow":  # the control: per-replica statistics give another step
        plain = max_diffs(one_step("plain", tmp_path), single)
        assert min(plain[p] for p in statistics) > 1e-3, plain


def test_sync_batch_norm_option():
    from keras_segattn.cli import train as cli_train
    from keras_segattn.layers.batch_norm import nested_layers
    from keras_segattn.training import TrainConfig, trainer

    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    assert cli_train.config_from_args(parser.parse_args(["--sync-bn"])).sync_batch_norm is True
    assert cli_train.config_from_args(parser.parse_args([])).sync_batch_norm is False
    with pytest.raises(ValueError, match="sync_batch_norm must be True or False; got 'yes'"):
        TrainConfig(sync_batch_norm="yes").validate()

    if BACKEND != "tensorflow":  # a no-op there (tests/layers/test_batch_norm.py)
        return
    config = TrainConfig(sync_batch_norm=True, num_classes=3).validate()
    model = trainer.build_model(config, 3)
    norms = [layer for layer in nested_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 10  # backbone (graph nodes) and heads (inside ConvBNAct)
    assert all(n.synchronized for n in norms)

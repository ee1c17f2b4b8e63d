"""Data-parallel training on each backend (a backend-specific adapter, on purpose).

* TensorFlow: ``tf.distribute.MirroredStrategy`` (all local GPUs) or, when ``TF_CONFIG`` is
  set, ``tf.distribute.MultiWorkerMirroredStrategy``. Keras 3's ``keras.distribution`` on TF is
  a DTensor prototype marked "DO NOT USE" (``keras/src/backend/tensorflow/distribution_lib.py``),
  while ``fit`` under a ``tf.distribute`` strategy scope works (stack-notes §6).
* JAX: ``keras.distribution.DataParallel`` over ``keras.distribution.list_devices()``; one
  SPMD program over the sharded global batch (BN statistics are global). Multi-host runs call
  ``keras.distribution.initialize()`` first. Every batch must divide by the device count
  (``IndivisibleError``, keras-team/keras#21167): training pipelines use
  ``drop_remainder=True`` and :func:`keras_segattn.evaluation.evaluate` pads eval batches.
* PyTorch: single device. Keras has no ``keras.distribution`` backend for torch; multi-GPU
  torch needs DDP with a custom loop (keras-io ``guides/distributed_training_with_torch.py``).

Usage::

    with distribution_scope("auto") as info:   # builds + compiles the model inside
        model = ...; model.compile(...)
    model.fit(...)
"""

import contextlib
import json
import os

import keras

DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker", "data_parallel")


class DistributionInfo:
    """What :func:`distribution_scope` set up: ``kind`` (one of :data:`DISTRIBUTIONS` minus
    ``auto``), ``num_replicas`` (global batch must divide by it) and ``strategy`` (TF only)."""

    def __init__(self, kind="none", num_replicas=1, strategy=None):
        self.kind = kind
        self.num_replicas = num_replicas
        self.strategy = strategy

    def __repr__(self):
        return f"DistributionInfo(kind={self.kind!r}, num_replicas={self.num_replicas})"


def resolve_distribution(kind="auto"):
    """Turn ``"auto"`` into a concrete kind for the current backend and hardware.

    ``auto``: TF -> ``multi_worker`` if ``TF_CONFIG`` is set, else ``mirrored`` with > 1 GPU;
    JAX -> ``data_parallel`` with > 1 accelerator (host-platform CPU devices don't count);
    otherwise and on torch -> ``none``. Explicit kinds are validated against the backend.
    """
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {kind!r}; choose from {list(DISTRIBUTIONS)}.")
    backend = keras.backend.backend()
    if kind == "auto":
        if backend == "tensorflow":
            import tensorflow as tf

            if os.environ.get("TF_CONFIG"):
                return "multi_worker"
            return "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
        if backend == "jax":
            import jax

            accelerators = [d for d in jax.devices() if d.platform != "cpu"]
            return "data_parallel" if len(accelerators) > 1 else "none"
        return "none"
    allowed = {
        "tensorflow": ("none", "mirrored", "multi_worker"),
        "jax": ("none", "data_parallel"),
    }.get(backend, ("none",))
    if kind not in allowed:
        hint = {
            "tensorflow": "on TensorFlow use 'mirrored' or 'multi_worker'",
            "jax": "on JAX use 'data_parallel'",
        }.get(backend, f"the {backend} backend has no keras.distribution support; "
                       "train on one device (or write a torch DDP loop)")
        raise ValueError(f"distribution {kind!r} is not available on the {backend} backend: {hint}.")
    return kind


@contextlib.contextmanager
def distribution_scope(kind="auto", devices=None):
    """Context in which to build and compile the model for data-parallel training.

    Yields a :class:`DistributionInfo`. For JAX the distribution stays set after the block
    (``fit``/``predict`` need it); :func:`reset_distribution` clears it.

    Args:
        kind: one of :data:`DISTRIBUTIONS`.
        devices: optional explicit device list (TF device strings or
            ``keras.distribution.list_devices()`` entries for JAX).
    """
    kind = resolve_distribution(kind)
    if kind in ("mirrored", "multi_worker"):
        import tensorflow as tf

        if kind == "multi_worker":
            if not os.environ.get("TF_CONFIG"):
                raise ValueError(
                    "distribution 'multi_worker' needs the TF_CONFIG environment variable "
                    "(cluster spec + task); see tf.distribute.MultiWorkerMirroredStrategy."
                )
            json.loads(os.environ["TF_CONFIG"])
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            strategy = tf.distribute.MirroredStrategy(devices=devices)
        with strategy.scope():
            yield DistributionInfo(kind, strategy.num_replicas_in_sync, strategy)
        return
    if kind == "data_parallel":
        devices = devices or keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        yield DistributionInfo(kind, len(devices))
        return
    yield DistributionInfo("none", 1)


def reset_distribution():
    """Clear a JAX ``keras.distribution`` set by :func:`distribution_scope`."""
    if keras.distribution.distribution() is not None:
        keras.distribution.set_distribution(None)

"""Data-parallel training on each backend (a backend-specific adapter, on purpose).

* TensorFlow: ``tf.distribute.MirroredStrategy`` (all local GPUs) or, when ``TF_CONFIG`` is
  set, ``tf.distribute.MultiWorkerMirroredStrategy`` (a subclass that works around two
  Keras 3 ``fit`` bugs with it, see :func:`_multi_worker_strategy`). Keras 3's
  ``keras.distribution`` on TF is a DTensor prototype marked "DO NOT USE"
  (``keras/src/backend/tensorflow/distribution_lib.py``), while ``fit`` under a
  ``tf.distribute`` strategy scope works (stack-notes §6). ``fit`` splits every global
  batch into contiguous per-replica shards (rows ``[0, B/2)`` to worker 0, ``[B/2, B)`` to
  worker 1), computes the mean loss per replica and averages the replicas' gradients, so a
  step equals the single-device step only when the shards are equal: the global batch must
  divide by ``num_replicas`` (``train`` checks it; its training pipeline drops the
  remainder). Each worker feeds the same global batches (Keras shards them by data).
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
            strategy = _multi_worker_strategy()
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


def _multi_worker_strategy():
    """``tf.distribute.MultiWorkerMirroredStrategy`` whose ``reduce`` accepts what Keras 3 gives it.

    Keras 3's TF trainer breaks ``fit`` under this strategy (keras-team/keras#20585,
    tensorflow/tensorflow#72388; still in Keras 3.15 / TF 2.21) in two places:

    * ``_maybe_symbolic_build`` calls ``strategy.reduce("MEAN", (x, y), axis=None)`` on the
      whole *structure* of the first batch, only to read its shapes and dtypes;
      ``CollectiveAllReduceStrategy`` only reduces single values ("Attempt to convert a
      value (PerReplica...) to a Tensor"), and all-reducing the batch would fail anyway when
      the shards differ in size.
    * ``reduce_per_replica`` reduces the scalar step logs (loss) with ``axis=0``
      ("Invalid reduction dimension 0 for input with 0 dimensions").

    Here a structure (which TF's ``reduce`` does not accept) gives this worker's first
    replica's values without any communication, and a scalar is reduced with ``axis=None``
    (the mean over replicas, what ``MirroredStrategy``'s path computes); anything else goes
    to TF unchanged. Collectives stay in lockstep: every worker takes the same branches.
    """
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            if not isinstance(value, tf.distribute.DistributedValues) and tf.nest.is_nested(value):
                return tf.nest.map_structure(
                    lambda v: v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v,
                    value)
            if axis is not None:
                local = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value
                if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                    axis = None
            return super().reduce(reduce_op, value, axis)

    return MultiWorkerMirroredStrategy()


def reset_distribution():
    """Clear a JAX ``keras.distribution`` set by :func:`distribution_scope`."""
    if keras.distribution.distribution() is not None:
        keras.distribution.set_distribution(None)

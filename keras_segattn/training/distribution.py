"""Data-parallel training on each backend (a backend-specific adapter, on purpose).

* TensorFlow: ``tf.distribute.MirroredStrategy`` (all local GPUs) or, when ``TF_CONFIG`` is
  set, ``tf.distribute.MultiWorkerMirroredStrategy`` (a subclass that works around two
  Keras 3 ``fit`` bugs with it, see :func:`_multi_worker_strategy`). Keras 3's
  ``keras.distribution`` on TF is a DTensor prototype marked "DO NOT USE"
  (``keras/src/backend/tensorflow/distribution_lib.py``), while ``fit`` under a
  ``tf.distribute`` strategy scope works (stack-notes §6). Every worker passes the same
  *global* batches to ``fit``; the strategy splits each into contiguous per-replica shards
  (measured with 2 workers: rows ``[0, ceil(B/2))`` to worker 0, the rest to worker 1),
  each replica takes the mean loss over its shard and the gradients are averaged over the
  replicas. A step therefore equals the single-device step only when the shards are equal:
  the global batch must divide by ``num_replicas`` (``train`` checks it and its training
  pipeline drops the remainder; with a remainder ``fit`` still runs, but weights each
  shard, not each image, equally). The strategy must exist before TensorFlow runs any op
  (:func:`multi_worker_strategy`; ``train`` creates it before its datasets) and tf.data
  inputs are sharded by data (:func:`prepare_dataset`). Tested with 2 CPU workers on
  localhost in ``tests/training/test_distribution.py``.
* JAX: ``keras.distribution.DataParallel`` over ``keras.distribution.list_devices()``; one
  SPMD program over the sharded global batch (BN statistics are global). Multi-host runs call
  ``keras.distribution.initialize()`` first. Every batch must divide by the device count
  (``IndivisibleError``, keras-team/keras#21167): training pipelines use
  ``drop_remainder=True``; inference (:func:`keras_segattn.inference.predict_on_batch`,
  used by ``evaluate`` and ``predict_logits`` in every mode) shards each batch over the
  devices, padding it to a multiple of the device count and dropping the padding after.
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
            strategy = multi_worker_strategy()
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


def prepare_dataset(dataset, kind):
    """A training dataset as distribution ``kind`` needs it.

    ``multi_worker``: a ``tf.data.Dataset`` gets the DATA auto-shard policy, so every worker
    reads the same global batches and keeps its shard of each (what Keras does for NumPy
    inputs, and what the 2-worker test checks). tf.data's default (AUTO) shards by input
    file first and fails when a dataset has fewer files than workers (the built-in
    ``synthetic`` dataset has one). Anything else is returned unchanged.
    """
    if kind != "multi_worker":
        return dataset
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


_MULTI_WORKER_STRATEGY = None


def worker_output_dir(output_dir, tf_config=None):
    """Where this worker writes its run folder under ``multi_worker``.

    The chief (task ``chief``, or ``worker`` 0 when the cluster has no chief) writes to
    ``output_dir``; every other worker to ``output_dir/workers/<type>_<index>``, so that
    workers sharing a file system never write the same checkpoint or backup file (each
    keeps its own resume state). ``tf_config``: the parsed ``TF_CONFIG`` (default: read
    from the environment; without one, ``output_dir`` is returned).
    """
    if tf_config is None:
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            return output_dir
        tf_config = json.loads(raw)
    task = tf_config.get("task") or {}
    task_type, index = task.get("type", "worker"), int(task.get("index", 0))
    has_chief = bool((tf_config.get("cluster") or {}).get("chief"))
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and not has_chief)
    if is_chief:
        return output_dir
    return os.path.join(output_dir, "workers", f"{task_type}_{index}")


def multi_worker_strategy():
    """This process's ``MultiWorkerMirroredStrategy`` (from ``TF_CONFIG``), created once.

    TensorFlow configures the collective ops when the strategy is created, and only before
    its runtime has started ("Collective ops must be configured at program startup"): call
    this before any other TensorFlow work (building ``tf.data`` pipelines included);
    :func:`distribution_scope` and :func:`keras_segattn.training.train` then reuse it.
    """
    global _MULTI_WORKER_STRATEGY
    if _MULTI_WORKER_STRATEGY is None:
        try:
            _MULTI_WORKER_STRATEGY = _multi_worker_strategy()
        except RuntimeError as error:
            if "program startup" not in str(error):
                raise
            raise RuntimeError(
                "distribution 'multi_worker': TensorFlow was already running when the "
                "MultiWorkerMirroredStrategy was created (collective ops must be configured "
                "at program startup). Call keras_segattn.training.distribution."
                "multi_worker_strategy() first, before building tf.data pipelines or "
                "running any other TensorFlow op.") from error
    return _MULTI_WORKER_STRATEGY


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

    def local(value):  # this worker's first replica's value
        return value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            if not isinstance(value, tf.distribute.DistributedValues) and tf.nest.is_nested(value):
                return tf.nest.map_structure(local, value)
            if axis is not None:
                shape = getattr(local(value), "shape", None)
                if shape is not None and tf.TensorShape(shape).rank == 0:
                    axis = None
            return super().reduce(reduce_op, value, axis)

    return MultiWorkerMirroredStrategy()


def reset_distribution():
    """Clear a JAX ``keras.distribution`` set by :func:`distribution_scope`."""
    if keras.distribution.distribution() is not None:
        keras.distribution.set_distribution(None)

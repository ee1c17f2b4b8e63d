"""``apply_batch_norm``: a ``keras.layers.BatchNormalization`` applied with the backend's fused
kernel; ``BatchNormalization``: the Keras layer whose ``call`` takes that path.

Backend adapter (TensorFlow and PyTorch only), on purpose. Keras computes
``BatchNormalization`` as a chain of elementwise ops (the moments, then subtract, multiply,
add; each a pass over the feature map, each recorded for the gradient), where both backends
have one fused kernel. ``apply_batch_norm`` calls that kernel with the layer's own variables
and the same maths as Keras:

* training: normalise with the batch mean and biased variance over ``(B, H, W)``; update
  ``moving_mean``/``moving_variance`` as Keras does (``moving = moving * momentum + batch *
  (1 - momentum)``, biased variance, which differs from PyTorch's own unbiased update);
* inference: normalise with the moving statistics;
* float16/bfloat16 inputs are normalised in float32 and cast back (as Keras does).

The kernels:

* PyTorch: ``torch.batch_norm`` on the NCHW *view* of the NHWC tensor (no copy; the CPU and
  GPU kernels read channels-last memory as is).
* TensorFlow: ``tf.raw_ops.FusedBatchNormV3`` in ``NHWC`` (rank-4 inputs), the kernel
  ``tf.keras`` 2 used; it also compiles under XLA. Besides time, it saves memory in
  training: Keras' chain keeps, for the gradient, the squared deviations of the moments and
  the scaled map (two more maps per normalisation), the fused op only its input. The raw
  op, not ``tf.compat.v1.nn.fused_batch_norm``: that wrapper raises any epsilon below
  1.001e-5 to 1.001e-5 (an old cuDNN minimum; cuDNN's ``CUDNN_BN_MIN_EPSILON`` is 0 since
  7.5), where the PyTorch references use exactly 1e-5.

Every other backend (JAX: XLA fuses Keras' chain itself), and any layer using an option the
fast path does not cover (``synchronized``, renormalisation, an axis other than the last, a
mask, on TensorFlow a rank other than 4), calls the layer itself. Measured gains: see
``benchmarks/RESULTS.md``; parity with the layer on every backend (values, gradients,
moving statistics, XLA): ``tests/layers/test_batch_norm.py``.
"""

import keras


def apply_batch_norm(norm, x, training=None):
    """``norm(x, training=training)`` for a built channels-last ``BatchNormalization``.

    Args:
        norm: a built ``keras.layers.BatchNormalization`` normalising the last axis.
        x: ``(B, H, W, C)`` tensor (any rank >= 2 with channels last).
        training: bool or ``None`` (inference), as for the layer.

    Returns the layer's output: same values (up to float rounding), same variable updates.
    """
    fused = _fused_kernel(norm, x)
    if fused is None:
        return norm(x, training=training)
    return fused(norm, x, bool(training) and norm.trainable)


@keras.saving.register_keras_serializable(package="keras_segattn")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by the fused kernel on TensorFlow and PyTorch.

    The same layer (arguments, variables, ``get_config``, maths and variable updates) with
    ``call`` routed through ``apply_batch_norm``'s fast path where it applies: the torch or
    TensorFlow backend (there rank-4 input), channels-last float input, no mask, not
    ``synchronized``, no ``renorm``. Everywhere else it is Keras' layer unchanged. Our own backbone graphs (``resnet*_v1c``
    and the KerasHub- and KerasCV-layout dilated ResNets) use it, so their 17
    (``resnet_tiny``) to 104 (``resnet101``) normalisations run one kernel per call in each
    direction instead of Keras' chain of elementwise operations and their autograd nodes
    (with ``layers.Conv2D``, the default run's torch training step went from 88 to 70-73 ms
    at 64 px; ``benchmarks/RESULTS.md``). The class name is Keras', so weight files name its
    variables as they name Keras' (``batch_normalization_N``), and Keras' weight files load
    into it and back.

    Example:
    >>> norm = BatchNormalization(epsilon=1e-5, momentum=0.9)
    >>> x = keras.ops.reshape(keras.ops.arange(8, dtype="float32"), (2, 2, 1, 2))
    >>> y = norm(x, training=True)  # batch statistics; moving ones updated as Keras does
    >>> [round(float(v), 2) for v in keras.ops.convert_to_numpy(norm.moving_mean)]
    [0.3, 0.4]
    >>> round(float(keras.ops.max(keras.ops.abs(keras.ops.mean(y, axis=(0, 1, 2))))), 4)
    0.0
    """

    def call(self, inputs, training=None, mask=None):
        fused = None if mask is not None else _fused_kernel(self, inputs)
        if fused is None:
            return super().call(inputs, training=training, mask=mask)
        return fused(self, inputs, bool(training) and self.trainable)


def _fused_kernel(norm, x):
    """The function that computes ``norm(x)`` with this backend's fused kernel exactly as
    Keras does (``_torch_batch_norm`` or ``_tensorflow_batch_norm``), or ``None``."""
    backend = keras.backend.backend()
    if (
        backend not in ("torch", "tensorflow")
        or norm.synchronized
        or norm.renorm
        or norm.axis not in (-1, len(x.shape) - 1)
        or keras.backend.standardize_dtype(x.dtype) not in ("float32", "float16", "bfloat16")
        or x.shape[-1] is None
    ):
        return None
    if backend == "torch":
        return _torch_batch_norm
    return _tensorflow_batch_norm if len(x.shape) == 4 else None


def _update_moving_statistics(norm, mean, biased_variance):
    """Keras' update: ``moving = moving * momentum + batch * (1 - momentum)``."""
    momentum = norm.momentum
    norm.moving_mean.assign(norm.moving_mean.value * momentum + mean * (1.0 - momentum))
    norm.moving_variance.assign(
        norm.moving_variance.value * momentum + biased_variance * (1.0 - momentum))


def _torch_batch_norm(norm, x, use_batch_statistics):
    import torch

    x = keras.ops.convert_to_tensor(x)
    x32 = x if x.dtype == torch.float32 else x.to(torch.float32)
    # (B, ..., C) -> (B, C, ...): a view whose memory is channels-last; the fused CPU/GPU
    # kernels read it as is.
    channels_first = x32.movedim(-1, 1)
    weight = norm.gamma.value if norm.scale else None
    bias = norm.beta.value if norm.center else None
    if use_batch_statistics:
        # torch.batch_norm, not F.batch_norm: the latter refuses one value per channel,
        # which Keras normalises (variance 0).
        # With momentum 1 the kernel writes the batch mean and the *unbiased* batch variance
        # into these buffers while it normalises (no second pass over x); Keras' update uses
        # the biased variance, (n - 1) / n of it (0 for one value per channel).
        mean = torch.zeros_like(norm.moving_mean.value)
        variance = torch.zeros_like(norm.moving_variance.value)
        y = torch.batch_norm(channels_first, weight, bias, mean, variance, True, 1.0,
                             norm.epsilon, torch.backends.cudnn.enabled)
        count = x32.numel() // x32.shape[-1]
        variance = variance * ((count - 1) / count) if count > 1 else torch.zeros_like(variance)
        _update_moving_statistics(norm, mean, variance)
    else:
        y = torch.batch_norm(channels_first, weight, bias, norm.moving_mean.value,
                             norm.moving_variance.value, False, 0.0, norm.epsilon,
                             torch.backends.cudnn.enabled)
    y = y.movedim(1, -1)
    return y if norm.compute_dtype == "float32" else y.to(getattr(torch, norm.compute_dtype))


def _tensorflow_batch_norm(norm, x, use_batch_statistics):
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    # float16/bfloat16 maps go in as they are: the kernel computes in float32 (its ``U``
    # type: scale, offset and statistics) and rounds only the output.
    channels = x.shape[-1]
    scale = (keras.ops.cast(norm.gamma, "float32") if norm.scale
             else tf.ones((channels,), tf.float32))
    offset = (keras.ops.cast(norm.beta, "float32") if norm.center
              else tf.zeros((channels,), tf.float32))
    if use_batch_statistics:
        unused = tf.zeros((0,), tf.float32)
        y, mean, variance = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=unused, variance=unused,
            epsilon=norm.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)[:3]
        # The kernel returns the *unbiased* batch variance for its own running average
        # (0 for one value per channel); Keras' update uses the biased one, (n - 1) / n of it.
        count = tf.cast(tf.size(x, out_type=tf.int64) // channels, tf.float32)
        variance = variance * ((count - 1.0) / tf.maximum(count, 1.0))
        _update_moving_statistics(norm, mean, variance)
    else:
        y = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=tf.convert_to_tensor(norm.moving_mean),
            variance=tf.convert_to_tensor(norm.moving_variance), epsilon=norm.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=False)[0]
    return tf.cast(y, norm.compute_dtype)


def set_synchronized_batch_norm(model, synchronized=True):
    """Make every ``keras.layers.BatchNormalization`` of ``model`` (nested ones included)
    compute its batch statistics over all replicas: synchronized BatchNorm.

    mmsegmentation trains these models with ``SyncBN`` (2 images per GPU on 4 GPUs: the
    statistics of 8 images, not 2). Keras' ``BatchNormalization(synchronized=True)``
    all-reduces the sum and squared sum of every replica inside a ``tf.distribute`` strategy
    (``MirroredStrategy``, ``MultiWorkerMirroredStrategy``); a step then equals the
    single-device step on the whole global batch (tested on 2 logical CPU devices in
    ``tests/training/test_sync_batch_norm.py``). Outside a strategy it is ordinary BN.

    Per backend:

    * TensorFlow: sets ``synchronized`` on each layer and drops ``model``'s cached
      train/test/predict functions so the next ``fit`` traces the synchronized version.
      Keras serializes the flag of BN layers that are nodes of a functional graph (the
      backbones'); a BN built inside another layer (``ConvBNAct`` in the heads) is rebuilt
      from its parent's arguments, unsynchronized: call this function again after loading a
      model (``keras-segattn train --sync-bn`` / ``TrainConfig(sync_batch_norm=True)`` does
      it whenever it builds or resumes one).
    * JAX: nothing to do and nothing changed: ``keras.distribution.DataParallel`` runs one
      program over the sharded *global* batch, so the mean and variance already reduce over
      every device (tested alongside, on 2 host devices).
    * PyTorch: nothing changed (Keras has no torch distribution: one device).

    Portability: Keras refuses ``synchronized=True`` outside TensorFlow, so a model saved with
    synchronized graph-node BNs loads only on TensorFlow. Call
    ``set_synchronized_batch_norm(model, False)`` before saving a model meant for other
    backends (the trainer does before it writes ``model.keras``).

    Args:
        model: a ``keras.Model`` or layer.
        synchronized: bool. ``False`` turns synchronization off again.

    Returns:
        The list of ``BatchNormalization`` layers that were changed (empty on JAX/PyTorch).
    """
    if not isinstance(synchronized, bool):
        raise TypeError(f"synchronized must be True or False; got {synchronized!r}.")
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"model must be a keras.Model or keras.layers.Layer; got "
                        f"{type(model).__name__}.")
    if keras.backend.backend() != "tensorflow":
        return []
    changed = [layer for layer in nested_layers(model)
               if isinstance(layer, keras.layers.BatchNormalization)
               and layer.synchronized != synchronized]
    for layer in changed:
        layer.synchronized = synchronized
    if changed and isinstance(model, keras.Model):
        model.train_function = model.test_function = model.predict_function = None
    return changed


def nested_layers(layer):
    """``layer`` and every layer it holds, at any depth, each once (depth first).

    A walk over the attributes (``vars``) that hold layers, directly or in lists, tuples and
    dicts: that is how every Keras layer keeps its sublayers (a functional ``Model`` keeps its
    graph's layers in a list, ``ConvBNAct`` its ``conv`` and ``norm``, a KerasHub backbone is
    a functional model). Keras has no public API for this (``Model.layers`` lists one level
    and only on models; the recursive ``Layer._flatten_layers`` is private).
    """
    found, stack, seen = [], [layer], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        children = []
        values = list(vars(current).values())
        while values:
            value = values.pop(0)
            if isinstance(value, keras.layers.Layer):
                children.append(value)
            elif isinstance(value, (list, tuple)):
                values[:0] = list(value)
            elif isinstance(value, dict):
                values[:0] = list(value.values())
        stack.extend(reversed(children))
    return found

"""``softmax_attention`` (the core of PAM, the non-local block and ISA): values and
gradients against float64 NumPy on every backend, through the written-out gradient that
TensorFlow and JAX use and through the plain expression (``return_attention=True``, and
PyTorch's path) and in blocks of queries (inference); mixed precision; the layers' gradients
equal those of the plain expression, their inference outputs those of the whole map;
``release_logits`` drops the energies Keras' TensorFlow softmax keeps on its output.
"""

import keras
import numpy as np
import pytest

from keras_segattn.layers import InterlacedSparseAttention, NonLocalBlock, PositionAttention
from keras_segattn.layers import _common
from keras_segattn.layers import interlaced_sparse_attention, non_local, position_attention
from keras_segattn.testing.test_case import TestCase, assert_allclose, values_and_input_gradient

# N != M and d != C, so that a product with a transposed operand in the wrong place fails.
B, N, M, D, C = 2, 7, 5, 3, 4


def arrays(seed=0, channels=C):
    rng = np.random.default_rng(seed)
    shapes = ((B, N, D), (B, M, D), (B, M, channels), (B, N, channels))
    return [rng.normal(size=shape).astype("float32") for shape in shapes]


def reference(query, key, value, upstream, scale):
    """float64 softmax(s Q K^T) V and its gradients w.r.t. Q, K, V for the cotangent dO."""
    query, key, value, upstream = (x.astype("float64") for x in (query, key, value, upstream))
    s = 1.0 if scale is None else scale
    energy = s * query @ key.transpose(0, 2, 1)
    attention = np.exp(energy - energy.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    d_attention = upstream @ value.transpose(0, 2, 1)
    d_energy = attention * (d_attention - (attention * d_attention).sum(-1, keepdims=True))
    return {
        "context": attention @ value,
        "attention": attention,
        "d_query": s * d_energy @ key,
        "d_key": s * d_energy.transpose(0, 2, 1) @ query,
        "d_value": attention.transpose(0, 2, 1) @ upstream,
    }


def value_and_gradients(fn, inputs, upstream, jit=False):
    """``fn(*inputs)`` and the gradients of ``sum(fn(*inputs) * upstream)`` w.r.t. each
    input, by the current backend's autodiff; ``jit``: compiled (TensorFlow XLA,
    ``jax.jit``; not on torch)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def value_and_gradient(*inputs):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                y = fn(*inputs)
                loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
            return y, tape.gradient(loss, inputs)

        if jit:
            value_and_gradient = tf.function(value_and_gradient, jit_compile=True)
        return value_and_gradient(*[tf.constant(x) for x in inputs])
    if backend == "jax":
        import jax

        def loss(*inputs):
            y = fn(*inputs)
            return (y.astype("float32") * upstream).sum(), y

        value_and_gradient = jax.value_and_grad(loss, argnums=tuple(range(len(inputs))),
                                                has_aux=True)
        if jit:
            value_and_gradient = jax.jit(value_and_gradient)
        (_, y), grads = value_and_gradient(*inputs)
        return y, grads
    assert not jit, "torch: eager only"
    import torch

    inputs = [torch.tensor(x, requires_grad=True) for x in inputs]
    y = fn(*inputs)
    (y.float() * torch.from_numpy(upstream)).sum().backward()
    return y.detach(), [x.grad for x in inputs]


def plain_softmax_attention(query, key, value, scale=None, return_attention=False,
                            blockwise=False):
    """The plain expression (autodiff through it), the path ``return_attention`` takes (the
    whole map whatever ``blockwise``)."""
    result = _common.softmax_attention(query, key, value, scale, return_attention=True)
    return result if return_attention else result[0]


class TestSoftmaxAttention(TestCase):
    @pytest.mark.parametrize("scale", [None, 0.7])
    @pytest.mark.parametrize("path", ["default", "plain"])
    # C < M: the written-out gradient takes rowsum(A * dA) from the context; C > M: from A
    @pytest.mark.parametrize("channels", [C, M + 1])
    def test_values_and_gradients_equal_the_float64_reference(self, scale, path, channels):
        query, key, value, upstream = arrays(channels=channels)
        expected = reference(query, key, value, upstream, scale)
        attend = _common.softmax_attention if path == "default" else plain_softmax_attention
        context, (d_query, d_key, d_value) = value_and_gradients(
            lambda q, k, v: attend(q, k, v, scale), [query, key, value], upstream)
        for name, actual in (("context", context), ("d_query", d_query), ("d_key", d_key),
                             ("d_value", d_value)):
            assert_allclose(actual, expected[name], atol=1e-5, rtol=1e-5, err_msg=name)

    @pytest.mark.parametrize("scale", [None, 0.7])
    @pytest.mark.parametrize("channels", [C, M + 1])
    def test_gradient_in_blocks_of_query_rows(self, scale, channels, monkeypatch):
        """Training (``blockwise=False``) keeps the whole attention, and the written-out
        gradient computes ``dA`` and ``dE`` in blocks of query rows (uneven here: 3, 3, 1):
        the same values and gradients, compiled too (``jax.jit``, TensorFlow XLA)."""
        monkeypatch.setattr(_common, "ATTENTION_BLOCK_ELEMENTS", 3 * B * M)
        query, key, value, upstream = arrays(9, channels=channels)
        assert _common._query_blocks(query, key) == [(0, 3), (3, 6), (6, 7)]
        expected = reference(query, key, value, upstream, scale)

        def attend(q, k, v):
            return _common.softmax_attention(q, k, v, scale)

        compiled = [False] if keras.backend.backend() == "torch" else [False, True]
        for jit in compiled:
            context, (d_query, d_key, d_value) = value_and_gradients(
                attend, [query, key, value], upstream, jit=jit)
            for name, actual in (("context", context), ("d_query", d_query),
                                 ("d_key", d_key), ("d_value", d_value)):
                assert_allclose(actual, expected[name], atol=1e-5, rtol=1e-5,
                                err_msg=f"{name} (compiled: {jit})")

    def test_returned_attention_and_callable_value(self):
        query, key, value, upstream = arrays(1)
        expected = reference(query, key, value, upstream, 0.5)
        for return_attention in (False, True):
            result = _common.softmax_attention(
                query, key, lambda: keras.ops.convert_to_tensor(value), 0.5,
                return_attention=return_attention)
            context, attention = result if return_attention else (result, None)
            assert_allclose(context, expected["context"], atol=1e-5, rtol=1e-5)
            if return_attention:
                assert keras.backend.standardize_dtype(attention.dtype) == "float32"
                assert_allclose(attention, expected["attention"], atol=1e-6, rtol=1e-5)

    @pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
    def test_half_precision_value(self, dtype):
        """Energies and softmax in float32, the product and dV in the value's dtype; dQ and
        dK float32; the numbers within half-precision rounding of the float64 reference."""
        query, key, value, upstream = arrays(2)
        expected = reference(query, key, value.astype(dtype).astype("float32"), upstream, None)

        def attend(q, k, v):
            return _common.softmax_attention(q, k, keras.ops.cast(v, dtype))

        context, (d_query, d_key, d_value) = value_and_gradients(
            attend, [query, key, value], upstream)
        assert keras.backend.standardize_dtype(context.dtype) == dtype
        for name, actual in (("context", context), ("d_query", d_query), ("d_key", d_key),
                             ("d_value", d_value)):
            assert keras.backend.standardize_dtype(actual.dtype) == "float32" or name == "context"
            assert_allclose(actual, expected[name], atol=5e-2, rtol=2e-2, err_msg=name)


class TestBlockwise(TestCase):
    """Inference in blocks of query rows (``blockwise=True``), exercised at test sizes by
    lowering the block size to a few rows."""

    @pytest.mark.parametrize("scale", [None, 0.7])
    def test_values_and_gradients_equal_the_float64_reference(self, scale, monkeypatch):
        # B * M = 10 energies per query row: blocks of 3, 3, 1 rows... of the 7 queries
        monkeypatch.setattr(_common, "ATTENTION_BLOCK_ELEMENTS", 3 * B * M)
        query, key, value, upstream = arrays(7)
        assert _common._query_blocks(query, key) == [(0, 3), (3, 6), (6, 7)]
        expected = reference(query, key, value, upstream, scale)
        context, (d_query, d_key, d_value) = value_and_gradients(
            lambda q, k, v: _common.softmax_attention(q, k, v, scale, blockwise=True),
            [query, key, value], upstream)
        for name, actual in (("context", context), ("d_query", d_query), ("d_key", d_key),
                             ("d_value", d_value)):
            assert_allclose(actual, expected[name], atol=1e-5, rtol=1e-5, err_msg=name)
        # a callable value, and half precision: the product in the value's dtype
        context = _common.softmax_attention(
            query, key, lambda: keras.ops.cast(value, "bfloat16"), scale, blockwise=True)
        assert keras.backend.standardize_dtype(context.dtype) == "bfloat16"
        assert_allclose(keras.ops.cast(context, "float32"), expected["context"], atol=3e-2,
                        rtol=2e-2)

    @pytest.mark.skipif(keras.backend.backend() == "torch", reason="eager on torch")
    def test_compiled_blocks(self, monkeypatch):
        """Traced with static sizes (XLA on TensorFlow, ``jax.jit``) the blocks unroll; a
        TensorFlow function of unknown size computes the whole map."""
        monkeypatch.setattr(_common, "ATTENTION_BLOCK_ELEMENTS", 3 * B * M)
        query, key, value, upstream = arrays(8)
        expected = reference(query, key, value, upstream, 0.5)["context"]

        def attend(q, k, v):
            return _common.softmax_attention(q, k, v, 0.5, blockwise=True)

        if keras.backend.backend() == "jax":
            import jax

            assert_allclose(jax.jit(attend)(query, key, value), expected, atol=1e-5, rtol=1e-5)
            return
        import tensorflow as tf

        compiled = tf.function(attend, jit_compile=True)
        assert_allclose(compiled(query, key, value), expected, atol=1e-5, rtol=1e-5)
        unknown = tf.function(attend, input_signature=[tf.TensorSpec((None, None, D))] * 2
                              + [tf.TensorSpec((None, None, C))])
        assert_allclose(unknown(query, key, value), expected, atol=1e-5, rtol=1e-5)

    def test_query_blocks(self, monkeypatch):
        class Shaped:
            def __init__(self, *shape):
                self.shape = shape

        monkeypatch.setattr(_common, "ATTENTION_BLOCK_ELEMENTS", 1000)
        # 2 x 100 x 30 = 6000 energies: 6 equal blocks of 17 rows (the last 15), each at most
        # 1000 energies plus one row
        blocks = _common._query_blocks(Shaped(2, 100, 8), Shaped(2, 30, 8))
        assert len(blocks) == 6 and blocks[0] == (0, 17) and blocks[-1] == (85, 100)
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
        assert all((stop - start) * 2 * 30 <= 1000 + 2 * 30 for start, stop in blocks)
        assert _common._query_blocks(Shaped(None, 100, 8), Shaped(None, 30, 8))[0] == (0, 34)
        # one block suffices, or a size unknown (a traced function of variable size)
        assert _common._query_blocks(Shaped(1, 30, 8), Shaped(1, 30, 8)) is None
        assert _common._query_blocks(Shaped(1, None, 8), Shaped(1, 30, 8)) is None
        assert _common._query_blocks(Shaped(1, 100, 8), Shaped(1, None, 8)) is None

        class Symbolic:  # like JAX's symbolic dimensions: no decidable comparison
            def __mul__(self, other):
                return self

            __rmul__ = __mul__

            def __le__(self, other):
                raise TypeError("inconclusive")

        assert _common._query_blocks(Shaped(1, Symbolic(), 8), Shaped(1, Symbolic(), 8)) is None
        assert _common._query_blocks(Shaped(Symbolic(), 100, 8), Shaped(Symbolic(), 30, 8))[0] == (0, 34)
        # one row larger than a block: one row per block
        assert len(_common._query_blocks(Shaped(4, 3, 8), Shaped(4, 500, 8))) == 3

    @pytest.mark.parametrize("name", ["PositionAttention", "NonLocalBlock",
                                      "InterlacedSparseAttention"])
    def test_layers_infer_in_blocks_with_the_same_outputs(self, name, monkeypatch):
        module, make = LAYERS[name]
        layer = make()
        x = np.random.default_rng(8).normal(size=(2, 6, 5, 8)).astype("float32")
        layer.build(x.shape)
        rng = np.random.default_rng(9)
        for weight in layer.trainable_weights:  # zero-initialised scales made non-zero
            if not np.any(keras.ops.convert_to_numpy(weight)):
                weight.assign(rng.uniform(0.5, 1.0, size=tuple(weight.shape)))
        whole = keras.ops.convert_to_numpy(layer(x, training=False))
        monkeypatch.setattr(_common, "ATTENTION_BLOCK_ELEMENTS", 40)
        used = []
        query_blocks = _common._query_blocks
        monkeypatch.setattr(_common, "_query_blocks",
                            lambda q, k: used.append(query_blocks(q, k)) or used[-1])
        blocked = keras.ops.convert_to_numpy(layer(x, training=False))
        assert any(blocks and len(blocks) > 1 for blocks in used), used
        assert_allclose(blocked, whole, atol=1e-5, rtol=1e-5)
        # training: the whole map, through the written-out gradient
        used.clear()
        layer(x, training=True)
        assert used == []


LAYERS = {
    "PositionAttention": (position_attention, lambda: PositionAttention(reduction=2)),
    "NonLocalBlock": (non_local, lambda: NonLocalBlock(reduction=2)),
    "InterlacedSparseAttention": (
        interlaced_sparse_attention,
        lambda: InterlacedSparseAttention(4, 8, down_factor=(2, 2))),
}


class TestLayersUseIt(TestCase):
    @pytest.mark.parametrize("gradient_blocks", [False, True])
    @pytest.mark.parametrize("name", sorted(LAYERS))
    def test_outputs_and_gradients_equal_the_plain_expression(
        self, name, gradient_blocks, monkeypatch
    ):
        """The layer with its ``softmax_attention`` swapped for the plain expression gives
        the same outputs, input gradient and weight gradients (so the written-out gradient
        reaches every weight as autodiff does); ``gradient_blocks``: in training, with blocks
        of one query row (TensorFlow's backward then runs in blocks)."""
        if gradient_blocks:
            monkeypatch.setattr(_common, "ATTENTION_BLOCK_ELEMENTS", 40)
        module, make = LAYERS[name]
        layer = make()
        x = np.random.default_rng(3).normal(size=(2, 6, 5, 8)).astype("float32")
        layer.build(x.shape)
        rng = np.random.default_rng(4)
        for weight in layer.trainable_weights:  # PAM's gamma, the non-local's last BN scale:
            if not np.any(keras.ops.convert_to_numpy(weight)):  # zero-initialised
                weight.assign(rng.uniform(0.5, 1.0, size=tuple(weight.shape)))
        training = gradient_blocks or name != "PositionAttention"
        kwargs = {"training": True} if training else {}
        written_out = outputs_and_gradients(layer, x, kwargs)
        monkeypatch.setattr(module, "softmax_attention", plain_softmax_attention)
        plain = outputs_and_gradients(layer, x, kwargs)
        names = ["outputs", "input gradient"] + [f"d {w.path}" for w in layer.trainable_weights]
        assert len(written_out) == len(names) > 3
        for name, a, b in zip(names, written_out, plain):
            assert_allclose(a, b, atol=5e-5, rtol=1e-4, err_msg=name)
            # Zero up to rounding by the maths: the key projection's bias adds the same q.b
            # to a whole row of energies (the softmax cancels it); the non-local block's g and
            # output biases shift every position alike before its training-mode BN (which
            # subtracts the batch mean). Every other gradient must be large enough for the
            # comparison to mean something.
            if not name.endswith(("key_conv/bias", "phi/bias", "g/bias", "conv_out/bias")):
                assert np.abs(b).max() > 1e-2, name


def outputs_and_gradients(layer, x, kwargs):
    """``[layer(x), d/dx, d/dw for each trainable weight]`` of ``sum(layer(x) * w)`` for a
    fixed ``w``, as NumPy, with the current backend's autodiff (JAX: ``stateless_call``)."""
    backend = keras.backend.backend()
    shape = tuple(keras.ops.convert_to_numpy(layer(x, **kwargs)).shape)
    w = np.random.default_rng(6).normal(size=shape).astype("float32")
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        weights = [v.value for v in layer.trainable_weights]
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = layer(x, **kwargs)
            loss = tf.reduce_sum(tf.cast(outputs, "float32") * w)
        gradients = tape.gradient(loss, [x] + weights)
        return [np.asarray(t) for t in [outputs] + gradients]
    if backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(trainable, x):
            outputs, _ = layer.stateless_call(trainable, non_trainable, x, **kwargs)
            return (outputs.astype("float32") * w).sum(), outputs

        trainable = [v.value for v in layer.trainable_variables]
        (_, outputs), (d_weights, d_x) = jax.value_and_grad(
            loss, argnums=(0, 1), has_aux=True)(trainable, x)
        return [np.asarray(t) for t in [outputs, d_x] + list(d_weights)]
    import torch

    for v in layer.trainable_weights:
        v.value.grad = None
    x = torch.tensor(x, requires_grad=True)
    outputs = layer(x, **kwargs)
    (outputs.float() * torch.from_numpy(w)).sum().backward()
    return [outputs.detach().numpy(), x.grad.numpy()] + [
        v.value.grad.numpy() for v in layer.trainable_weights]


class TestReleaseLogits(TestCase):
    def test_drops_tensorflow_reference_and_keeps_values(self):
        x = np.random.default_rng(4).normal(size=(2, 3, 5)).astype("float32")
        probabilities = keras.ops.softmax(x, axis=-1)
        expected = keras.ops.convert_to_numpy(probabilities)
        released = _common.release_logits(probabilities)
        assert released is probabilities
        assert not hasattr(released, "_keras_logits")
        assert_allclose(released, expected, atol=0, rtol=0)

    def test_attention_maps_of_the_layers_hold_no_energies(self):
        """PAM's and the non-local block's returned maps (the plain path) do not carry the
        energies on TensorFlow (Keras' softmax attaches them: one more N x N map alive)."""
        x = np.random.default_rng(5).normal(size=(1, 4, 3, 8)).astype("float32")
        for layer in (PositionAttention(reduction=2), NonLocalBlock(reduction=2)):
            _, attention = layer(x, return_attention_scores=True)
            assert not hasattr(attention, "_keras_logits"), type(layer).__name__
            assert tuple(attention.shape) == (1, 12, 12)

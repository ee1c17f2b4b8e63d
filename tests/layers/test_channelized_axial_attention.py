import keras
import numpy as np
import pytest

from keras_segattn import convert
from keras_segattn.layers import ChannelizedAxialAttention
from keras_segattn.testing import TestCase

def _golden_layer(load_golden, **kwargs):
    meta, data, params = load_golden("caa_axial")
    kw = meta["constructor_kwargs"]
    layer = ChannelizedAxialAttention(
        kw["filters"], key_channels=kw["guided_filters"], gate_layers=kw["hidden_layers_count"],
        gate_ratio=kw["hidden_layer_ratio"], **kwargs,
    )
    layer(data["input"])
    convert.load_reference_weights(layer, params)
    return layer, data, meta["tolerance"]


class TestChannelizedAxialAttention(TestCase):
    # group size 2 exercises the grouped path with a padded last group (9 -> 10, 7 -> 8).
    @pytest.mark.parametrize("group", [None, 2])
    def test_golden_caa_axial(self, group, load_golden):
        layer, data, tol = _golden_layer(load_golden, query_group_size=group)
        self.assertAllClose(
            layer(data["input"], training=False), data["output"], atol=tol["atol"], rtol=tol["rtol"]
        )

    def test_layer_contract(self):
        # The grouped path (ops.map) is covered by the golden test with group 2; the
        # contract runs on the dense path with the golden case's configuration and shape,
        # so the eager ops compiled by the golden test are reused (JAX compiles per shape).
        x = np.random.default_rng(1).normal(size=(2, 9, 7, 16)).astype("float32")
        self.run_layer_test(
            ChannelizedAxialAttention,
            {"filters": 16, "key_channels": 8, "gate_layers": 5, "gate_ratio": 0.25, "query_group_size": None},
            x, expected_output_shape=(2, 9, 7, 16),
        )

    def test_float16_large_map_is_finite(self, call_compiled):
        x = np.random.default_rng(3).normal(size=(1, 128, 128, 4)).astype("float32") * 4
        layer = ChannelizedAxialAttention(4, key_channels=4, gate_layers=1, query_group_size=64,
                                          dtype="mixed_float16")
        y = call_compiled(layer, x)
        assert keras.backend.standardize_dtype(y.dtype) == "float16"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))))

    def test_bad_arguments_and_inputs(self):
        with pytest.raises(ValueError, match="query_group_size must be"):
            ChannelizedAxialAttention(8, query_group_size=0)
        with pytest.raises(ValueError, match="hidden units"):
            ChannelizedAxialAttention(2, gate_ratio=0.25)
        with pytest.raises(ValueError, match="filters must be"):
            ChannelizedAxialAttention(0)
        with pytest.raises(ValueError, match="4-D"):
            ChannelizedAxialAttention(8)(np.ones((2, 8, 8), "float32"))

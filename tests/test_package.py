import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_segattn
from keras_segattn import convert
from keras_segattn.layers import ConvBNAct, Resize
from keras_segattn.layers.resize import resize, separable_bilinear
from keras_segattn.testing import TestCase, values_and_input_gradient


def test_version():
    assert keras_segattn.__version__.count(".") == 2


def test_missing_backend_gives_clear_import_error():
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'jax' else real(name, *a)\n"
        "import keras_segattn\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "'jax' was requested" in result.stderr and "keras-segattn[jax]" in result.stderr


def test_unknown_backend_is_named():
    from keras_segattn._backend import check_backend_installed

    with pytest.raises(ImportError, match="unknown Keras backend 'mxnet'"):
        check_backend_installed("mxnet")


def _torch_interpolate(x, size, align_corners):
    torch = pytest.importorskip("torch")
    out = torch.nn.functional.interpolate(
        torch.tensor(x).permute(0, 3, 1, 2), size=size, mode="bilinear",
        align_corners=align_corners,
    )
    return out.permute(0, 2, 3, 1).numpy()


class TestResize(TestCase):
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("size", [(11, 9), (3, 2), (5, 7), (1, 1)])
    def test_matches_torch_interpolate(self, align_corners, size):
        x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype("float32")
        reference = np.zeros((1, *size, 1), "float32")
        out = Resize(align_corners=align_corners)(x, reference)
        self.assertAllClose(out, _torch_interpolate(x, size, align_corners), atol=1e-5)

    @pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_static_sizes_equal_the_tensor_size_path(self, interpolation, align_corners):
        # Python-int sizes take the NumPy (constant) index path, scalar tensors the ops path.
        x = np.random.default_rng(2).normal(size=(2, 5, 7, 3)).astype("float32")
        for size in [(11, 9), (3, 2), (5, 7), (1, 1)]:
            static = resize(x, size, interpolation, align_corners)
            dynamic = resize(x, tuple(keras.ops.convert_to_tensor(s, "int32") for s in size),
                             interpolation, align_corners)
            self.assertAllClose(static, dynamic, atol=1e-6, rtol=0)
            if interpolation == "nearest":
                torch = pytest.importorskip("torch")
                expected = torch.nn.functional.interpolate(
                    torch.tensor(x).permute(0, 3, 1, 2), size=size, mode="nearest"
                ).permute(0, 2, 3, 1).numpy()
                self.assertAllClose(static, expected, atol=0, rtol=0)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_backend_path_equals_the_portable_path(self, align_corners):
        """On torch ``resize`` calls ``F.interpolate``; the portable ``keras.ops`` path (which
        TF and JAX take and ``test_matches_torch_interpolate`` checks there) gives the same
        values and input gradient on every backend."""
        x = np.random.default_rng(3).normal(size=(2, 5, 7, 3)).astype("float32")
        for size in [(11, 9), (3, 2), (5, 7), (16, 21)]:
            y, dx = values_and_input_gradient(
                lambda t: resize(t, size, "bilinear", align_corners), x)
            y_ref, dx_ref = values_and_input_gradient(
                lambda t: separable_bilinear(t, (5, 7), size, align_corners), x)
            self.assertAllClose(y, y_ref, atol=1e-5, rtol=1e-5)
            self.assertAllClose(dx, dx_ref, atol=1e-4, rtol=1e-5)

    @pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
    def test_half_precision_keeps_its_dtype(self, dtype):
        x = np.random.default_rng(4).normal(size=(1, 4, 6, 2)).astype("float32")
        y = resize(keras.ops.cast(x, dtype), (8, 12))
        assert keras.backend.standardize_dtype(y.dtype) == dtype
        self.assertAllClose(keras.ops.cast(y, "float32"), resize(x, (8, 12)), atol=3e-2, rtol=3e-2)

    def test_scale_factor_size(self):
        x = np.ones((1, 9, 6, 2), "float32")
        assert tuple(Resize(scale=0.5)(x).shape) == (1, 4, 3, 2)
        assert tuple(Resize(scale=0.75)(x).shape) == (1, 6, 4, 2)

    def test_layer_contract(self):
        x = np.random.default_rng(1).normal(size=(2, 6, 5, 4)).astype("float32")
        self.run_layer_test(
            Resize, {"scale": 2.0, "align_corners": True}, x, expected_output_shape=(2, 12, 10, 4)
        )

    def test_dynamic_shape_predict_on_tf_data(self):
        import tensorflow as tf

        images = keras.Input((None, None, 3))
        model = keras.Model(images, Resize(scale=2.0)(images))
        for shape in [(1, 7, 5, 3), (1, 4, 9, 3)]:
            data = tf.data.Dataset.from_tensors(tf.zeros(shape))
            assert model.predict(data, verbose=0).shape == (1, shape[1] * 2, shape[2] * 2, 3)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="interpolation must be"):
            Resize(interpolation="bicubic")
        with pytest.raises(ValueError, match="scale must be positive"):
            Resize(scale=0)
        with pytest.raises(ValueError, match="4-D"):
            Resize(scale=2.0)(np.ones((4, 4, 3), "float32"))


class TestConvBNAct(TestCase):
    def test_layer_contract(self):
        x = np.random.default_rng(0).normal(size=(2, 7, 5, 3)).astype("float32")
        self.run_layer_test(
            ConvBNAct, {"filters": 4, "kernel_size": 3, "activation": "leaky_relu"}, x,
            expected_output_shape=(2, 7, 5, 4), run_training_check=True,
        )

    def test_leaky_slope_and_eps_match_torch(self):
        torch = pytest.importorskip("torch")
        rng = np.random.default_rng(0)
        x = rng.normal(size=(2, 6, 5, 3)).astype("float32")
        conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        bn = torch.nn.BatchNorm2d(4).eval()
        with torch.no_grad():
            bn.running_mean.copy_(torch.tensor(rng.normal(size=4), dtype=torch.float32))
            bn.running_var.copy_(torch.tensor(rng.uniform(0.5, 1.5, size=4), dtype=torch.float32))
            expected = torch.nn.functional.leaky_relu(
                bn(conv(torch.tensor(x).permute(0, 3, 1, 2))), 0.01
            ).permute(0, 2, 3, 1).numpy()
        layer = ConvBNAct(4, kernel_size=3, activation="leaky_relu")
        layer(x)
        state = torch.nn.Sequential(conv, bn).state_dict()
        layer_map = layer.reference_weight_mapping()
        assert sorted(layer_map) == sorted(k for k in state if "num_batches" not in k)
        convert.load_reference_weights(layer, state)
        self.assertAllClose(layer(x, training=False), expected, atol=1e-5)

    def test_bad_activation(self):
        with pytest.raises(ValueError, match="activation must be one of"):
            ConvBNAct(4, activation="gelu")


class TestLoadReferenceWeights(TestCase):
    def _layer(self):
        layer = ConvBNAct(4, kernel_size=3, use_bias=True)
        layer(np.zeros((1, 5, 5, 2), "float32"))
        return layer

    def _state(self):
        return {
            "c.weight": np.ones((4, 2, 3, 3), "float32"),
            "c.bias": np.arange(4, dtype="float32"),
            "b.weight": np.full(4, 2.0, "float32"),
            "b.bias": np.zeros(4, "float32"),
            "b.running_mean": np.zeros(4, "float32"),
            "b.running_var": np.ones(4, "float32"),
            "b.num_batches_tracked": np.array(3),
        }

    def test_loads_and_converts_layout(self):
        layer = self._layer()
        layer.reference_weight_mapping = lambda: ConvBNAct.reference_weight_mapping(layer, "c", "b")
        state = self._state()
        state["c.weight"] = np.random.default_rng(0).normal(size=(4, 2, 3, 3)).astype("float32")
        convert.load_reference_weights(layer, state)
        self.assertAllClose(layer.conv.kernel, state["c.weight"].transpose(2, 3, 1, 0))
        self.assertAllClose(layer.conv.bias, np.arange(4))
        self.assertAllClose(layer.norm.gamma, np.full(4, 2.0))

    def test_errors_name_every_bad_key(self):
        layer = self._layer()
        layer.reference_weight_mapping = lambda: ConvBNAct.reference_weight_mapping(layer, "c", "b")
        state = self._state()
        del state["b.bias"]
        state["extra.weight"] = np.zeros(3)
        state["c.weight"] = np.zeros((4, 3, 3, 3), "float32")
        with pytest.raises(ValueError) as info:
            convert.load_reference_weights(layer, state)
        message = str(info.value)
        assert "missing keys: b.bias" in message
        assert "unexpected keys: extra.weight" in message
        assert "c.weight: shape (4, 3, 3, 3)" in message
        # Nothing was assigned.
        assert not np.allclose(keras.ops.convert_to_numpy(layer.norm.gamma), 2.0)

    def test_unbuilt_and_unsupported(self):
        with pytest.raises(ValueError, match="not built yet"):
            convert.load_reference_weights(ConvBNAct(4), {})
        with pytest.raises(TypeError, match="no reference implementation"):
            convert.load_reference_weights(keras.layers.Dense(2), {})

    def test_reads_npz_and_reports_missing_file(self, tmp_path):
        path = tmp_path / "w.npz"
        np.savez(path, **{"param/" + k: v for k, v in self._state().items()}, input=np.zeros(1))
        weights = convert.read_weights_file(path)
        assert "c.weight" in weights and "input" not in weights
        with pytest.raises(FileNotFoundError, match="no such weights file"):
            convert.read_weights_file(tmp_path / "nope.npz")
        with pytest.raises(ValueError, match="expected a .npz"):
            (tmp_path / "w.txt").write_text("x")
            convert.read_weights_file(tmp_path / "w.txt")


def test_import_does_not_touch_the_network():
    code = (
        "import socket\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError('network access during import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "import keras_segattn, keras_segattn.models, keras_segattn.data, keras_segattn.export\n"
        "keras_segattn.models.DANet(num_classes=3, backbone='resnet_tiny')\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")

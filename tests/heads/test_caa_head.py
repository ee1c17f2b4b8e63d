"""Porting the official CAA head's weights (CAR ``heads/caa.py``) onto ``CAAHead``.

The reference below is an independent NumPy (float64) forward written from the official
TensorFlow/Keras code's structure (edwardyehuang/CAR ``heads/caa.py``
``ChannelizedAxialAttentionHead`` + ``AxialAttentionBlock``, iSeg ``ConvBnRelu`` /
``ImageLevelBlock``, ``SegManaged.logits_conv``), in inference mode (group size 1: one query
row/column per step, as the official ``group_fn`` does at inference). It does not call
keras_segattn. Its parameters are created under the names Keras 2 gives the official
variables (``<scope>/<layer>/<variable>:0``, the format of golden case ``caa_axial``), and
the forward reads them back by those names only.
"""

import keras
import numpy as np
import pytest

from keras_segattn import convert
from keras_segattn.heads import CAAHead

EPS = 1e-3  # iSeg normalization() / Keras BatchNormalization default
SIZES = dict(in_channels=12, filters=8, guided_filters=4, hidden_layers_count=5,
             hidden_layer_ratio=0.25, end_filters=6, num_class=3)


class _Reference:
    """NumPy CAR CAA head + logits conv. ``params`` holds every variable the reference
    creates, keyed by its Keras variable name (built while the layers are declared)."""

    def __init__(self, rng, in_channels, filters, guided_filters, hidden_layers_count,
                 hidden_layer_ratio, end_filters, num_class, scope=(), logits_scope=("logits_conv",)):
        self.rng = rng
        self.params = {}
        self.scope = list(scope)
        self.hidden_layers_count = hidden_layers_count
        hidden = int(filters * hidden_layer_ratio)
        # ChannelizedAxialAttentionHead.__init__ (CAR), in declaration order.
        self.entry = self._conv_bn_relu(["attention_entry_conv"], in_channels, filters, 3)
        self.block = {
            "v_querykey": self._conv_bn_relu(["caa_block", "v_querykey_conv"], filters, guided_filters, 1),
            "h_querykey": self._conv_bn_relu(["caa_block", "h_querykey_conv"], filters, guided_filters, 1),
            "v_c": self._channel_attention(["caa_block", "v_c_attention"], filters, hidden),
            "h_c": self._channel_attention(["caa_block", "h_c_attention"], filters, hidden),
            "value": self._conv_bn_relu(["caa_block", "value_conv"], filters, filters, 1),
        }
        # The gated attention output is small (two sigmoid gates, convex sums): a smaller
        # moving variance there keeps the spatial detail visible in the logits.
        self.attention_end = self._conv_bn_relu(["attention_end_conv"], filters, filters, 1, var_scale=0.01)
        # ImageLevelBlock(filters): default name "ImageLevelBlock", ConvBnRelu named "conv".
        self.image_level = self._conv_bn_relu(["ImageLevelBlock", "conv"], in_channels, filters, 1)
        self.end = self._conv_bn_relu(["end_conv"], 2 * filters, end_filters, 1)
        # SegManaged.logits_conv: plain Conv2D 1x1 with bias, outside the head's scope.
        logits = "/".join(logits_scope)
        self.logits = (self._variable(f"{logits}/kernel:0", self._normal((1, 1, end_filters, num_class), end_filters)),
                       self._variable(f"{logits}/bias:0", self.rng.normal(0, 0.2, num_class)))

    # --- variables, named like Keras 2 names them -----------------------------------------
    def _normal(self, shape, fan_in):
        return self.rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)

    def _variable(self, name, value):
        assert name not in self.params, name
        self.params[name] = np.asarray(value, "float32")
        return name

    def _conv_bn_relu(self, path, cin, cout, k, var_scale=1.0):
        """iSeg ConvBnRelu(name=n): Conv2D "n_conv" (no bias) + BN "n_bn" inside model n."""
        n = path[-1]
        base = "/".join(self.scope + path)
        return dict(
            k=k,
            kernel=self._variable(f"{base}/{n}_conv/kernel:0", self._normal((k, k, cin, cout), k * k * cin)),
            gamma=self._variable(f"{base}/{n}_bn/gamma:0", self.rng.uniform(0.5, 1.5, cout)),
            beta=self._variable(f"{base}/{n}_bn/beta:0", self.rng.normal(0, 0.2, cout)),
            mean=self._variable(f"{base}/{n}_bn/moving_mean:0", self.rng.normal(0, 0.2, cout)),
            var=self._variable(f"{base}/{n}_bn/moving_variance:0", self.rng.uniform(0.5, 1.5, cout) * var_scale),
        )

    def _channel_attention(self, path, filters, hidden):
        """CAR ChannelAttentionBlock: DenseExt "dense{i}" x count, "dense_end"; no bias."""
        base = "/".join(self.scope + path)
        denses, units = [], filters
        for i in range(self.hidden_layers_count):
            denses.append(self._variable(f"{base}/dense{i}/kernel:0", self._normal((units, hidden), units)))
            units = hidden
        end = self._variable(f"{base}/dense_end/kernel:0", self._normal((units, filters), units))
        return denses, end

    # --- forward --------------------------------------------------------------------------
    def _p(self, name):
        return self.params[name].astype("float64")

    def conv_bn_relu(self, x, layer):
        kernel = self._p(layer["kernel"])
        k = layer["k"]
        pad = k // 2
        xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        h, w = x.shape[1:3]
        y = sum(np.einsum("nhwc,cd->nhwd", xp[:, dy:dy + h, dx:dx + w], kernel[dy, dx])
                for dy in range(k) for dx in range(k))
        y = (y - self._p(layer["mean"])) / np.sqrt(self._p(layer["var"]) + EPS)
        y = y * self._p(layer["gamma"]) + self._p(layer["beta"])
        return np.maximum(y, 0.0)

    def channel_attention(self, weighted_map, layers):
        denses, end = layers
        x = weighted_map.mean(axis=(1, 2))  # [N, C]
        for name in denses:
            x = x @ self._p(name)
            x = np.where(x > 0, x, 0.2 * x)  # tf.nn.leaky_relu default alpha
        x = 1.0 / (1.0 + np.exp(-(x @ self._p(end))))
        return x[:, None, None, :]

    @staticmethod
    def softmax(e):
        e = e - e.max(axis=-1, keepdims=True)
        e = np.exp(e)
        return e / e.sum(axis=-1, keepdims=True)

    def axial_block(self, x):
        b = self.block
        qv = self.conv_bn_relu(x, b["v_querykey"])
        qh = self.conv_bn_relu(x, b["h_querykey"])
        v_rate = self.softmax(np.einsum("niwc,njwc->nwij", qv, qv))  # [N, W, H, H]
        h_rate = self.softmax(np.einsum("nhic,nhjc->nhij", qh, qh))  # [N, H, W, W]
        features = self.conv_bn_relu(x, b["value"])
        # Vertical: one query row i at a time; weighted map over (key row j, column w).
        v_map = np.transpose(v_rate, (2, 0, 3, 1))  # [H(i), N, H(j), W]
        rows = []
        for i in range(v_map.shape[0]):
            weighted = features * v_map[i][..., None]  # [N, H, W, C]
            weighted = weighted * self.channel_attention(weighted, b["v_c"])
            rows.append(weighted.sum(axis=1))  # [N, W, C]
        features = np.transpose(np.stack(rows), (1, 0, 2, 3))  # [N, H, W, C]
        # Horizontal on the vertical result, one query column i at a time.
        h_map = np.transpose(h_rate, (2, 0, 1, 3))  # [W(i), N, H, W(j)]
        cols = []
        for i in range(h_map.shape[0]):
            weighted = features * h_map[i][..., None]
            weighted = weighted * self.channel_attention(weighted, b["h_c"])
            cols.append(weighted.sum(axis=2))  # [N, H, C]
        return np.transpose(np.stack(cols), (1, 2, 0, 3))

    def __call__(self, backbone_feature):
        x = backbone_feature.astype("float64")
        y = self.conv_bn_relu(x, self.entry)
        y = self.axial_block(y)
        y = self.conv_bn_relu(y, self.attention_end)
        pooled = self.conv_bn_relu(x.mean(axis=(1, 2), keepdims=True), self.image_level)
        pooled = np.ones(x.shape[:3] + (1,)) * pooled
        y = self.conv_bn_relu(np.concatenate([y, pooled], axis=-1), self.end)
        kernel, bias = self.logits
        return np.einsum("nhwc,cd->nhwd", y, self._p(kernel)[0, 0]) + self._p(bias)


def _head(**kwargs):
    return CAAHead(
        SIZES["num_class"], filters=SIZES["filters"], channels=SIZES["end_filters"],
        attention_options={"key_channels": SIZES["guided_filters"],
                           "gate_layers": SIZES["hidden_layers_count"],
                           "gate_ratio": SIZES["hidden_layer_ratio"], **kwargs},
    )


def _built_head(**kwargs):
    head = _head(**kwargs)
    head.build((None, None, None, SIZES["in_channels"]))
    return head


def _call(head, x):
    """``head(x, training=False)`` as NumPy; compiled once on JAX (eager JAX compiles every
    op separately, several times slower than one ``predict``)."""
    if keras.backend.backend() != "jax":
        return keras.ops.convert_to_numpy(head(x, training=False))
    inputs = keras.Input(x.shape[1:], batch_size=x.shape[0])
    model = keras.Model(inputs, head(inputs, training=False))
    return model.predict(x, batch_size=x.shape[0], verbose=0)


def test_reference_weights_reproduce_the_official_head():
    rng = np.random.default_rng(4)
    reference = _Reference(rng, **SIZES)
    x = rng.normal(size=(2, 5, 4, SIZES["in_channels"])).astype("float32")
    expected = reference(x)
    head = _built_head()
    convert.load_reference_weights(head, reference.params)
    y = _call(head, x)
    assert expected.std(axis=(1, 2)).mean() > 0.01  # the logits vary spatially
    np.testing.assert_allclose(y, expected, atol=1e-4, rtol=1e-4)


def test_mapping_keys_are_the_reference_variable_names():
    head = _built_head()
    reference = _Reference(np.random.default_rng(0), **SIZES)
    assert sorted(head.reference_weight_mapping()) == sorted(reference.params)
    # Full names inside a CAR SegManaged model (head and logits conv in different scopes).
    scope = ("seg_managed", "channelized_axial_attention_head")
    logits = ("seg_managed", "seg_managed", "logits_conv")
    full = _Reference(np.random.default_rng(0), **SIZES, scope=scope, logits_scope=logits)
    mapping = head.reference_weight_mapping(prefix="/".join(scope), classifier="/".join(logits))
    assert sorted(mapping) == sorted(full.params)
    # classifier=None: the head alone, without the logits conv.
    head_only = head.reference_weight_mapping(classifier=None)
    assert sorted(head_only) == sorted(k for k in reference.params if not k.startswith("logits_conv/"))


def test_missing_or_unexpected_keys_are_named_and_nothing_is_loaded():
    head = _built_head()
    params = _Reference(np.random.default_rng(1), **SIZES).params
    before = keras.ops.convert_to_numpy(head.entry.conv.kernel)

    missing = dict(params)
    del missing["caa_block/h_c_attention/dense_end/kernel:0"]
    with pytest.raises(ValueError, match=r"missing keys: caa_block/h_c_attention/dense_end/kernel:0"):
        convert.load_reference_weights(head, missing)

    extra = dict(params)
    extra["aux_conv/aux_conv_conv/kernel:0"] = np.zeros((3, 3, 12, 512), "float32")
    with pytest.raises(ValueError, match=r"unexpected keys: aux_conv/aux_conv_conv/kernel:0"):
        convert.load_reference_weights(head, extra)

    np.testing.assert_array_equal(keras.ops.convert_to_numpy(head.entry.conv.kernel), before)


def test_reference_batch_norm_defaults():
    head = _head()
    assert head.epsilon == 1e-3 and head.attention.epsilon == 1e-3
    assert head.entry.norm.epsilon == 1e-3 and head.fuse.norm.epsilon == 1e-3
    config = head.get_config()
    assert config["epsilon"] == 1e-3 and config["momentum"] == 0.9


def test_training_warns_of_one_image_per_batch_normalisation():
    # The image-level branch's BN normalises one value per image and channel: with one
    # image it outputs beta and its convolution gets no gradient. The trainer warns.
    from keras_segattn import models
    from keras_segattn.training.trainer import one_image_batch_norm_note

    caanet = models.CAANet(3, backbone="resnet_tiny", filters=16, channels=8,
                           attention_options={"key_channels": 8, "gate_layers": 1})
    assert one_image_batch_norm_note(caanet, 1) == (
        "keras-segattn: warning: with 1 image per batch normalisation the CAA head's "
        "image-level branch does not train; use a batch of at least 2 images per replica "
        "(or --sync-bn across replicas).")
    assert one_image_batch_norm_note(caanet, 2) is None
    fcn = models.FCN(3, backbone="resnet_tiny", channels=8, aux_channels=8)
    assert one_image_batch_norm_note(fcn, 1) is None

    # Why: one training step at batch 1 leaves the branch's convolution as it was, at
    # batch 2 it moves it.
    head = caanet.get_layer("head")
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    labels = np.random.default_rng(1).integers(0, 3, (2, 32, 32)).astype("int32")
    caanet.compile(steps=10, optimizer_type="adamw", learning_rate=1e-3, weight_decay=0.0)
    for batch_size, moves in ((1, False), (2, True)):
        kernel = keras.ops.convert_to_numpy(head.image_level.conv.kernel).copy()
        caanet.fit(images[:batch_size], labels[:batch_size], batch_size=batch_size, epochs=1,
                   verbose=0)
        moved = not np.array_equal(keras.ops.convert_to_numpy(head.image_level.conv.kernel),
                                   kernel)
        assert moved == moves, batch_size

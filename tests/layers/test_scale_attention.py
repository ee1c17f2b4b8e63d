import keras
import numpy as np
import pytest

from keras_segattn.layers import ScaleAttention
from keras_segattn.layers.scale_attention import merge_scales
from keras_segattn.testing import TestCase


def _np(v):
    return keras.ops.convert_to_numpy(v)


def _data(rng, batch=2, h=5, w=7, k=3, c=2, s=3):
    scores = [rng.normal(size=(batch, h, w, k)).astype("float32") for _ in range(s)]
    feats = [rng.normal(size=(batch, h, w, c)).astype("float32") for _ in range(s)]
    return scores, feats


class TestScaleAttention(TestCase):
    def test_matches_numpy_formula(self):
        rng = np.random.default_rng(0)
        scores, feats = _data(rng)
        layer = ScaleAttention(hidden_filters=4)
        merged, weights = layer(scores, feats, return_attention_scores=True)
        # Independent NumPy: 3x3 conv + ReLU, 1x1 conv, softmax over scales, weighted sum.
        x = np.concatenate(feats, -1).astype("float64")
        kernel, bias = _np(layer.hidden_conv.kernel), _np(layer.hidden_conv.bias)
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        hidden = np.maximum(sum(xp[:, i:i + 5, j:j + 7] @ kernel[i, j] for i in range(3) for j in range(3)) + bias, 0)
        logits = hidden @ _np(layer.logits_conv.kernel)[0, 0] + _np(layer.logits_conv.bias)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        expected = sum(w[..., s:s + 1] * scores[s] for s in range(3))
        self.assertAllClose(weights, w, atol=1e-5, rtol=1e-5)
        self.assertAllClose(merged, expected, atol=1e-5, rtol=1e-5)
        self.assertAllClose(layer(scores, feats), expected, atol=1e-5, rtol=1e-5)

    def test_merge_scales_equal_logits_is_mean(self):
        scores = [np.full((1, 2, 2, 3), v, "float32") for v in (1.0, 2.0, 6.0)]
        merged, weights = merge_scales(scores, np.zeros((1, 2, 2, 3), "float32"))
        self.assertAllClose(merged, np.full((1, 2, 2, 3), 3.0), atol=1e-6)
        self.assertAllClose(weights, np.full((1, 2, 2, 3), 1 / 3), atol=1e-6)

    def test_layer_contract(self):
        rng = np.random.default_rng(1)
        scores, feats = _data(rng, s=2)
        layer = ScaleAttention(hidden_filters=4, dropout=0.1)
        inputs = [keras.Input((None, None, 3)) for _ in range(2)] + [keras.Input((None, None, 2)) for _ in range(2)]
        outputs = layer(inputs[:2], inputs[2:], return_attention_scores=True)
        model = keras.Model(inputs, outputs)
        merged, weights = model.predict(scores + feats, verbose=0)
        assert merged.shape == (2, 5, 7, 3) and weights.shape == (2, 5, 7, 2)
        self.assertAllClose(merged, layer(scores, feats), atol=1e-5, rtol=1e-5)
        self.run_serialization_test(layer, [scores, feats], atol=1e-5, rtol=1e-5)
        self.run_model_saving_test(model, scores + feats, atol=1e-5, rtol=1e-5)
        self.run_precision_test(ScaleAttention, {"hidden_filters": 4}, [scores, feats])

    def test_bad_inputs(self):
        rng = np.random.default_rng(2)
        scores, feats = _data(rng)
        with pytest.raises(ValueError, match="3 score maps but 2 feature maps"):
            ScaleAttention(hidden_filters=4)(scores, feats[:2])
        with pytest.raises(ValueError, match="same known channel count"):
            ScaleAttention(hidden_filters=4)([scores[0], scores[1][..., :2]], feats[:2])
        with pytest.raises(ValueError, match="dropout must be"):
            ScaleAttention(dropout=1.0)

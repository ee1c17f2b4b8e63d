import json

import keras
import numpy as np
import pytest

from keras_segattn.training import WarmupPolyDecay


def expected(t, lr=0.01, total=100, warm=10, end=1e-4, power=0.9, ratio=1e-6):
    poly = lambda s: (lr - end) * (1 - min(s, total) / total) ** power + end  # noqa: E731
    if t < warm:
        return poly(warm) * (ratio + (1 - ratio) * t / warm)
    return poly(t)


class TestWarmupPolyDecay:
    def test_values(self):
        s = WarmupPolyDecay(0.01, decay_steps=100, warmup_steps=10, end_lr=1e-4)
        for t in (0, 1, 5, 9, 10, 11, 50, 99, 100, 150):
            np.testing.assert_allclose(float(s(t)), expected(t), rtol=1e-5, atol=1e-9)
        assert float(s(0)) < 1e-7
        assert float(s(10)) > float(s(50)) > float(s(99)) > float(s(100)) == pytest.approx(1e-4)

    def test_no_warmup_is_mmseg_poly(self):
        s = WarmupPolyDecay(0.01, decay_steps=80000)
        np.testing.assert_allclose(float(s(0)), 0.01, rtol=1e-6)
        np.testing.assert_allclose(float(s(40000)), (0.01 - 1e-4) * 0.5 ** 0.9 + 1e-4, rtol=1e-5)

    def test_serialization_and_optimizer(self):
        s = WarmupPolyDecay(0.02, decay_steps=50, warmup_steps=5, end_lr=0.0, power=1.0)
        restored = keras.saving.deserialize_keras_object(
            json.loads(json.dumps(keras.saving.serialize_keras_object(s))))
        assert isinstance(restored, WarmupPolyDecay)
        assert restored.get_config() == s.get_config()
        opt = keras.optimizers.SGD(learning_rate=s)
        opt2 = keras.optimizers.SGD.from_config(opt.get_config())
        np.testing.assert_allclose(float(opt2.learning_rate), float(s(0)), atol=1e-9)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="warmup_steps"):
            WarmupPolyDecay(0.01, decay_steps=10, warmup_steps=10)
        with pytest.raises(ValueError, match="decay_steps"):
            WarmupPolyDecay(0.01, decay_steps=0)

"""keras_segattn.optimizers.SGD against torch.optim.SGD (the optimizer mmseg and the papers use)."""

import keras
import numpy as np
import pytest

from keras_segattn.optimizers import SGD
from keras_segattn.testing import TestCase

torch = pytest.importorskip("torch")

STEPS = 6
BASE_LR = 0.05


def _schedule(step):
    """Poly decay, power 0.9, over 10 steps: the rate changes on every step."""
    return BASE_LR * (1.0 - step / 10.0) ** 0.9


class KerasSchedule(keras.optimizers.schedules.LearningRateSchedule):
    def __call__(self, step):
        return BASE_LR * keras.ops.power(1.0 - keras.ops.cast(step, "float32") / 10.0, 0.9)


def _model():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="backbone")(inputs)
    outputs = keras.layers.Dense(2, name="head")(hidden)
    return keras.Model(inputs, outputs)


def _run_torch(initial, gradients, momentum, nesterov, weight_decay, head_multiplier):
    params = {name: torch.nn.Parameter(torch.tensor(value)) for name, value in initial.items()}
    groups = [
        {"params": [p for n, p in params.items() if not n.startswith("head/")], "mult": 1.0},
        {"params": [p for n, p in params.items() if n.startswith("head/")],
         "mult": head_multiplier},
    ]
    optimizer = torch.optim.SGD(groups, lr=BASE_LR, momentum=momentum, nesterov=nesterov,
                                weight_decay=weight_decay)
    for step, grads in enumerate(gradients):
        for group in optimizer.param_groups:
            group["lr"] = _schedule(step) * group["mult"]
        for name, param in params.items():
            param.grad = torch.tensor(grads[name])
        optimizer.step()
    return {name: p.detach().numpy() for name, p in params.items()}


class TestSGD(TestCase):
    @pytest.mark.parametrize("momentum,nesterov,weight_decay,head_multiplier", [
        (0.9, False, 5e-4, 1.0),   # mmseg's recipe
        (0.9, False, 1e-2, 10.0),  # official DANet: head at 10x
        (0.9, True, 1e-3, 10.0),
        (0.0, False, 1e-2, 2.0),
    ])
    def test_matches_torch_sgd(self, momentum, nesterov, weight_decay, head_multiplier):
        model = _model()
        rng = np.random.default_rng(0)
        for v in model.trainable_variables:
            v.assign(rng.normal(size=v.shape).astype("float32"))
        initial = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables}
        gradients = [{name: rng.normal(size=value.shape).astype("float32")
                      for name, value in initial.items()} for _ in range(STEPS)]
        optimizer = SGD(learning_rate=KerasSchedule(), momentum=momentum, nesterov=nesterov,
                        weight_decay=weight_decay, lr_multipliers={"head/": head_multiplier})
        for grads in gradients:
            optimizer.apply([grads[v.path] for v in model.trainable_variables],
                            model.trainable_variables)
        expected = _run_torch(initial, gradients, momentum, nesterov, weight_decay,
                              head_multiplier)
        for v in model.trainable_variables:
            self.assertAllClose(v, expected[v.path], atol=1e-6, rtol=1e-5)
        # The multiplier really applied where expected.
        assert optimizer.multiplier_for(model.get_layer("head").kernel) == head_multiplier
        assert optimizer.multiplier_for(model.get_layer("backbone").kernel) == 1.0

    def test_excluded_variables_are_not_decayed(self):
        w = keras.Variable(np.ones(3, "float32"), name="bias")
        optimizer = SGD(learning_rate=0.1, momentum=0.0, weight_decay=0.5)
        optimizer.exclude_from_weight_decay(var_names=["bias"])
        optimizer.apply([keras.ops.zeros(3)], [w])
        self.assertAllClose(w, np.ones(3))

    def test_config_round_trip(self):
        optimizer = SGD(learning_rate=0.02, momentum=0.8, weight_decay=1e-4,
                        lr_multipliers={"head/": 10.0})
        config = optimizer.get_config()
        restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert isinstance(restored, SGD)
        assert restored.l2_weight_decay == 1e-4
        assert restored.lr_multipliers == {"head/": 10.0}
        assert restored.weight_decay is None  # the decoupled kind stays off
        assert config["weight_decay"] == 1e-4

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="momentum"):
            SGD(momentum=1.5)
        with pytest.raises(ValueError, match="weight_decay"):
            SGD(weight_decay=-1.0)
        with pytest.raises(ValueError, match="regular expression"):
            SGD(lr_multipliers={"head[": 10.0})
        with pytest.raises(ValueError, match="lr_multipliers"):
            SGD(lr_multipliers={"head/": -1.0})

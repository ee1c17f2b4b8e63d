"""``keras_segattn.recipe``: the one optimizer / schedule / loss / metric recipe."""

import keras
import numpy as np
import pytest

from keras_segattn import losses, models, recipe
from keras_segattn.optimizers import SGD


def _model():
    return models.FCN(3, backbone="resnet_tiny", channels=8, aux_channels=8)


def test_optimizers_and_schedule():
    model = _model()
    sgd = recipe.optimizer(model, steps=100, warmup_steps=10, head_lr_multiplier=10.0,
                           gradient_accumulation_steps=2)
    assert isinstance(sgd, SGD) and sgd.momentum == 0.9 and sgd.l2_weight_decay == 5e-4
    assert sgd.gradient_accumulation_steps == 2
    assert set(sgd.lr_multipliers.values()) == {10.0}
    assert {"head/", "aux_head/"} <= set(sgd.lr_multipliers)
    schedule = sgd._learning_rate
    assert isinstance(schedule, recipe.WarmupPolyDecay)
    assert (schedule.initial_lr, schedule.decay_steps, schedule.warmup_steps, schedule.end_lr,
            schedule.power) == (0.01, 100, 10, 1e-4, 0.9)
    adamw = recipe.optimizer(None, optimizer_type="adamw", learning_rate=3e-3, weight_decay=0.01)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == 0.01
    with pytest.raises(ValueError, match=r"optimizer_type must be one of \('sgd', 'adamw'\), "
                                         r"got 'adam'"):
        recipe.optimizer(model, optimizer_type="adam")
    with pytest.raises(ValueError, match="head_lr_multiplier != 1 needs the model"):
        recipe.optimizer(None, head_lr_multiplier=10.0)


def test_non_finite_numbers_are_refused():
    """A NaN learning rate compiled and trained a NaN model without a word."""
    for name, value in (("learning_rate", float("nan")), ("end_learning_rate", float("inf")),
                        ("power", float("nan")), ("momentum", float("nan")),
                        ("weight_decay", float("inf")), ("learning_rate", "0.01")):
        with pytest.raises(ValueError) as error:
            recipe.optimizer(**{name: value})
        assert str(error.value) == f"recipe: {name} must be a finite number; got {value!r}."


def test_losses_and_metrics():
    found = recipe.losses(("logits", "aux", "image_logits"), 5, image_level=("image_logits",))
    assert isinstance(found["image_logits"], losses.SANetCategoricalLoss)
    assert found["image_logits"].name == "image_logits_bce"
    for name in ("logits", "aux"):
        loss = found[name]
        assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
        assert loss.name == f"{name}_ce" and loss.ignore_class == 255
    # 255 pixels count for nothing: the CE of a mask with one valid pixel is that pixel's.
    logits = np.zeros((1, 1, 2, 5), "float32")
    logits[0, 0, 0, 2] = 3.0
    y = np.array([[[2, 255]]])
    expected = -np.log(np.exp(3.0) / (np.exp(3.0) + 4.0))
    assert abs(float(found["logits"](y, logits)) - expected) < 1e-5
    (miou,) = recipe.metrics(5)["logits"]
    assert isinstance(miou, keras.metrics.MeanIoU) and miou.ignore_class == 255


def test_compile_uses_the_recipe_and_saves_its_numbers():
    model = _model()
    model.compile(steps=50, learning_rate=0.02, optimizer_type="adamw", weight_decay=0.05)
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert model.get_compile_config() == {"segattn_recipe": dict(
        recipe.DEFAULTS, optimizer_type="adamw", steps=50, learning_rate=0.02,
        weight_decay=0.05)}
    model.compile(optimizer="adam")  # anything explicit: plain Keras compile state
    assert "segattn_recipe" not in model.get_compile_config()


def test_warmup_poly_decay_is_importable_from_training():
    from keras_segattn.training import WarmupPolyDecay

    assert WarmupPolyDecay is recipe.WarmupPolyDecay
    assert keras.saving.get_registered_object("keras_segattn>WarmupPolyDecay") is WarmupPolyDecay

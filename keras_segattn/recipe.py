"""The training recipe: optimizer, learning-rate schedule, losses and metrics (one place).

``Segmenter.compile()`` with no arguments and the trainer (``keras-segattn train``) both build
their optimizer, schedule, losses and metrics here, so a model trained either way is compiled
the same way, and its compile state (``{"segattn_recipe": {...}}``, the numbers below) is
restored by ``keras.models.load_model`` after a plain ``import keras_segattn`` (which imports
this module and registers ``WarmupPolyDecay``).

mmsegmentation's recipe (``configs/_base_/schedules/schedule_80k.py`` and the
``*_r50-d8`` model configs):

* optimizer: ``keras_segattn.optimizers.SGD`` (PyTorch's update: L2 weight decay added to
  the gradient before momentum), momentum 0.9, weight decay 5e-4, learning rate 0.01 for a
  batch of 8; optionally a learning-rate multiplier on every variable outside the backbone
  (``head_lr_multiplier``: 10 in the official DANet recipe); ``"adamw"`` for Keras' AdamW;
* schedule: ``WarmupPolyDecay``: poly decay (power 0.9, down to 1e-4 at ``steps``), with an
  optional linear warm-up (mmseg LinearLR + PolyLR);
* loss: ``SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)`` on every
  pixel output, ``losses.SANetCategoricalLoss`` on image-level outputs, weighted by the heads'
  loss weights;
* metric: ``metrics.MeanIoU(num_classes, ignore_class=255)`` on the main output (Keras'
  ``MeanIoU`` with a confusion matrix that is fast on the torch backend too).
"""

import re

import keras

from keras_segattn import validation
from keras_segattn.common import IGNORE_INDEX, MAIN_OUTPUT
from keras_segattn.losses import SANetCategoricalLoss
from keras_segattn.metrics import MeanIoU
from keras_segattn.optimizers import SGD

OPTIMIZERS = ("sgd", "adamw")

# The recipe's numbers (Segmenter.compile's keyword defaults; TrainConfig's fields).
DEFAULTS = dict(
    optimizer_type="sgd", steps=80000, learning_rate=0.01, momentum=0.9, weight_decay=5e-4,
    power=0.9, end_learning_rate=1e-4, warmup_steps=0, head_lr_multiplier=1.0,
    gradient_accumulation_steps=None,
)


@keras.saving.register_keras_serializable(package="keras_segattn")
class WarmupPolyDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up followed by polynomial decay, evaluated per optimizer iteration ``t``.

    ``poly(t) = (initial_lr - end_lr) * (1 - min(t, T) / T) ** power + end_lr`` with
    ``T = decay_steps`` (the total number of training steps, warm-up included, like
    mmseg's PolyLR that starts at iteration 0), and for ``t < W = warmup_steps``

    ``lr(t) = poly(W) * (warmup_ratio + (1 - warmup_ratio) * t / W)``

    so the rate rises linearly from ``warmup_ratio * poly(W)`` to ``poly(W)`` and continues
    smoothly into the decay. With ``warmup_steps=0`` it is exactly mmseg's PolyLR.

    With ``gradient_accumulation_steps`` on the optimizer, ``t`` counts micro-batches (Keras
    increments ``optimizer.iterations`` every step), so give ``decay_steps`` in the same unit.

    Args:
        initial_lr: peak learning rate (mmseg: 0.01 for batch 8).
        decay_steps: total training steps ``T``.
        warmup_steps: length ``W`` of the linear warm-up (0 = none).
        end_lr: final learning rate (mmseg ``eta_min``: 1e-4).
        power: poly exponent (0.9).
        warmup_ratio: starting fraction of the warm-up (mmseg LinearLR ``start_factor``: 1e-6).

    Example:

    >>> s = WarmupPolyDecay(0.01, decay_steps=100, warmup_steps=10, end_lr=1e-4)
    >>> round(float(s(100)), 6)
    0.0001
    """

    def __init__(self, initial_lr, decay_steps, warmup_steps=0, end_lr=1e-4, power=0.9,
                 warmup_ratio=1e-6, name="WarmupPolyDecay"):
        super().__init__()
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be > 0; got {decay_steps}.")
        if not 0 <= warmup_steps < decay_steps:
            raise ValueError(
                f"warmup_steps must be in [0, decay_steps={decay_steps}); got {warmup_steps}."
            )
        if initial_lr < end_lr:
            raise ValueError(f"initial_lr ({initial_lr}) must be >= end_lr ({end_lr}).")
        self.initial_lr = float(initial_lr)
        self.decay_steps = int(decay_steps)
        self.warmup_steps = int(warmup_steps)
        self.end_lr = float(end_lr)
        self.power = float(power)
        self.warmup_ratio = float(warmup_ratio)
        self.name = name

    def _poly(self, step):
        ops = keras.ops
        progress = ops.minimum(step, float(self.decay_steps)) / float(self.decay_steps)
        return (self.initial_lr - self.end_lr) * ops.power(1.0 - progress, self.power) + self.end_lr

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        decayed = self._poly(step)
        if self.warmup_steps == 0:
            return decayed
        warm_steps = float(self.warmup_steps)
        factor = self.warmup_ratio + (1.0 - self.warmup_ratio) * step / warm_steps
        warm = self._poly(ops.convert_to_tensor(warm_steps, "float32")) * factor
        return ops.where(step < warm_steps, warm, decayed)

    def get_config(self):
        return {
            "initial_lr": self.initial_lr,
            "decay_steps": self.decay_steps,
            "warmup_steps": self.warmup_steps,
            "end_lr": self.end_lr,
            "power": self.power,
            "warmup_ratio": self.warmup_ratio,
            "name": self.name,
        }


def _check_finite(**values):
    for name, value in values.items():
        validation.check_finite(value, f"recipe: {name}")


def schedule(learning_rate=0.01, steps=80000, warmup_steps=0, end_learning_rate=1e-4,
             power=0.9):
    """The recipe's learning-rate schedule: ``WarmupPolyDecay`` (poly alone when
    ``warmup_steps=0``, which is mmseg's PolyLR)."""
    _check_finite(learning_rate=learning_rate, end_learning_rate=end_learning_rate, power=power)
    return WarmupPolyDecay(learning_rate, decay_steps=int(steps), warmup_steps=int(warmup_steps),
                           end_lr=end_learning_rate, power=power)


def head_lr_multipliers(model, multiplier):
    """``lr_multipliers`` for ``keras_segattn.optimizers.SGD``: ``multiplier`` on every
    variable outside ``model.backbone`` (``{}`` when it is 1)."""
    if float(multiplier) == 1.0:
        return {}
    return {re.escape(layer.name) + "/": float(multiplier) for layer in model.layers
            if layer is not model.backbone and layer.weights}


def optimizer(model=None, optimizer_type="sgd", steps=80000, learning_rate=0.01, momentum=0.9,
              weight_decay=5e-4, power=0.9, end_learning_rate=1e-4, warmup_steps=0,
              head_lr_multiplier=1.0, gradient_accumulation_steps=None):
    """The recipe's optimizer with its schedule.

    Args:
        model: the segmenter (for ``head_lr_multiplier``; may be ``None`` when it is 1).
        optimizer_type: ``"sgd"`` (``keras_segattn.optimizers.SGD``, PyTorch weight decay,
            per-variable LR multipliers) or ``"adamw"`` (Keras' AdamW, decoupled decay).
        steps, learning_rate, warmup_steps, end_learning_rate, power: ``schedule``'s.
        momentum, weight_decay: SGD's (AdamW takes ``weight_decay`` only).
        head_lr_multiplier: SGD only: LR factor of every variable outside the backbone.
        gradient_accumulation_steps: Keras' gradient accumulation (``None``: off).
    """
    if optimizer_type not in OPTIMIZERS:
        raise ValueError(
            f"recipe: optimizer_type must be one of {OPTIMIZERS}, got {optimizer_type!r}."
        )
    _check_finite(momentum=momentum, weight_decay=weight_decay or 0.0,
                  head_lr_multiplier=head_lr_multiplier)
    lr = schedule(learning_rate, steps, warmup_steps, end_learning_rate, power)
    accumulation = gradient_accumulation_steps or None
    if optimizer_type == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay,
                                      gradient_accumulation_steps=accumulation)
    if float(head_lr_multiplier) != 1.0 and model is None:
        raise ValueError("recipe: head_lr_multiplier != 1 needs the model (its backbone).")
    multipliers = head_lr_multipliers(model, head_lr_multiplier) if model is not None else {}
    return SGD(learning_rate=lr, momentum=momentum, weight_decay=weight_decay or None,
               lr_multipliers=multipliers, gradient_accumulation_steps=accumulation)


def losses(output_names, num_classes, image_level=()):
    """``{output: loss}``: CE with ``ignore_class=255`` per pixel output (named
    ``"<output>_ce"``), ``SANetCategoricalLoss`` on the image-level outputs
    (``"<output>_bce"``)."""
    return {
        name: (SANetCategoricalLoss(num_classes, name=f"{name}_bce") if name in image_level
               else keras.losses.SparseCategoricalCrossentropy(
                   from_logits=True, ignore_class=IGNORE_INDEX, name=f"{name}_ce"))
        for name in output_names
    }


def metrics(num_classes):
    """``{"logits": [MeanIoU(num_classes, ignore_class=255)]}`` (logged ``logits_mean_iou``)."""
    return {MAIN_OUTPUT: [MeanIoU(num_classes=num_classes, ignore_class=IGNORE_INDEX,
                                  sparse_y_pred=False, name="mean_iou")]}

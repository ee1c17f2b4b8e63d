"""Learning-rate schedule of the standard segmentation recipe: linear warm-up, then poly decay.

mmsegmentation's schedules (``configs/_base_/schedules/schedule_80k.py``) use ``PolyLR(power=0.9,
eta_min=1e-4, by_epoch=False)``; many attention papers add a short linear warm-up.
"""

import keras


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

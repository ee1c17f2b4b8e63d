"""SGD as PyTorch (and therefore mmsegmentation and the official repos) defines it.

Why not ``keras.optimizers.SGD``? Two differences change the recipe of every paper:

1. **Weight decay.** ``torch.optim.SGD(weight_decay=wd)`` adds ``wd * w`` to the gradient
   *before* the momentum buffer (L2 regularisation), so with momentum 0.9 the decay acts
   ~10x as strongly as Keras' ``weight_decay``, which subtracts ``lr * wd * w`` once per
   step outside the momentum ("decoupled", AdamW-style). mmsegmentation's ``5e-4`` means
   the PyTorch kind.
2. **Per-parameter-group learning rates.** The official DANet / CCNet training scripts give
   the head 10x the backbone's learning rate (``{'params': model.head.parameters(),
   'lr': lr * 10}``); Keras optimizers have one learning rate.

Update rule (``torch.optim.SGD``, dampening 0), per variable ``w`` with gradient ``g``,
learning rate ``lr`` (scheduled), multiplier ``m_w`` and momentum ``mu``::

    d = g + wd * w                  (if w is decayed)
    b = mu * b + d                  (b starts at 0, so b = d on the first step)
    w = w - lr * m_w * (d + mu * b if nesterov else b)

Note the buffer holds gradients, not ``lr * gradient`` as in ``keras.optimizers.SGD``: with
a decaying learning rate both rules differ slightly, and this one is PyTorch's.
"""

import re

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_segattn")
class SGD(keras.optimizers.SGD):
    """SGD with PyTorch's coupled (L2) weight decay and per-variable learning-rate multipliers.

    Args:
        learning_rate: float or ``LearningRateSchedule``.
        momentum: float in ``[0, 1]``. Default 0.9.
        nesterov: bool. Default False.
        weight_decay: L2 coefficient added to the gradient (PyTorch semantics, see the
            module docstring); ``None`` or 0 for none. Variables excluded with
            ``exclude_from_weight_decay()`` are not decayed.
        lr_multipliers: ``None`` or a dict ``{pattern: multiplier}``: a variable whose
            ``path`` (e.g. ``"head/conv5a/conv/kernel"``) matches the regular expression
            ``pattern`` (``re.match``, so ``"head/"`` means "starts with head/") gets
            ``learning_rate * multiplier``; the first matching pattern wins; others get 1.
        **kwargs: other ``keras.optimizers.Optimizer`` arguments (``clipnorm``,
            ``gradient_accumulation_steps``, ...), except ``weight_decay`` which is above.

    Example:

    >>> import numpy as np, keras
    >>> optimizer = SGD(learning_rate=0.1, momentum=0.0, weight_decay=0.5)
    >>> w = keras.Variable(np.ones(2, "float32"))
    >>> optimizer.apply([keras.ops.zeros(2)], [w])  # d = 0 + 0.5 * 1; w = 1 - 0.1 * 0.5
    >>> np.round(keras.ops.convert_to_numpy(w), 4).tolist()
    [0.95, 0.95]
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, nesterov=False, weight_decay=None,
                 lr_multipliers=None, name="segattn_sgd", **kwargs):
        if not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"SGD: momentum must be a float in [0, 1]; got {momentum!r}.")
        if weight_decay is not None and (not isinstance(weight_decay, (int, float))
                                         or weight_decay < 0):
            raise ValueError(f"SGD: weight_decay must be None or a float >= 0; got "
                             f"{weight_decay!r}.")
        lr_multipliers = dict(lr_multipliers or {})
        for pattern, multiplier in lr_multipliers.items():
            try:
                re.compile(pattern)
            except (re.error, TypeError) as error:
                raise ValueError(f"SGD: lr_multipliers key {pattern!r} is not a regular "
                                 f"expression ({error}).") from None
            if not isinstance(multiplier, (int, float)) or multiplier < 0:
                raise ValueError(f"SGD: lr_multipliers[{pattern!r}] must be a float >= 0; "
                                 f"got {multiplier!r}.")
        # The base class' weight_decay is the decoupled kind: keep it off, ours is L2.
        super().__init__(learning_rate=learning_rate, momentum=float(momentum),
                         nesterov=nesterov, weight_decay=None, name=name, **kwargs)
        self.l2_weight_decay = float(weight_decay or 0.0)
        self.lr_multipliers = {str(k): float(v) for k, v in lr_multipliers.items()}

    def multiplier_for(self, variable):
        """The learning-rate multiplier of ``variable`` (1.0 when no pattern matches)."""
        for pattern, multiplier in self.lr_multipliers.items():
            if re.match(pattern, variable.path):
                return multiplier
        return 1.0

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._multipliers = [self.multiplier_for(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype) * self._multipliers[index]
        gradient = ops.cast(gradient, variable.dtype)
        if self.l2_weight_decay and self._use_weight_decay(variable):
            gradient = gradient + ops.cast(self.l2_weight_decay, variable.dtype) * variable
        if self.momentum == 0:
            self.assign_sub(variable, learning_rate * gradient)
            return
        momentum = ops.cast(self.momentum, variable.dtype)
        buffer = self.momentums[index]
        self.assign(buffer, momentum * buffer + gradient)
        step = gradient + momentum * buffer if self.nesterov else buffer
        self.assign_sub(variable, learning_rate * step)

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.l2_weight_decay or None
        config["lr_multipliers"] = dict(self.lr_multipliers)
        return config

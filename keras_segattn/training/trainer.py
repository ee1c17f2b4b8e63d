"""``train(config)``: the standard segmentation recipe as one function (used by the CLI).

Iteration-based like mmsegmentation: ``config.steps`` optimizer steps in intervals of
``config.eval_every`` steps (one Keras epoch each), a checkpoint + evaluation after each
interval, SGD(momentum 0.9, weight decay 5e-4, lr 0.01) with :class:`WarmupPolyDecay` (or
``optimizer="adamw"``: AdamW with the same schedule, default lr 3e-3), SCCE on logits
with ignore index 255 and an auxiliary head at weight 0.4 (the model's ``compile()``
defaults), mIoU/mAcc/aAcc. Re-running the same command with the same ``output_dir`` resumes
from the last interval (``keras.callbacks.BackupAndRestore``).
"""

import dataclasses
import datetime
import json
import os
import sys
import time

import keras

from keras_segattn import evaluation, recipe
from keras_segattn.training import callbacks as callbacks_lib
from keras_segattn.training import distribution as distribution_lib

MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("auto", "sgd", "adamw")
# Training augmentation: "full" = mmseg's random rescale + crop + flip + photometric
# distortion; "flip" = random crop + horizontal flip only (images keep the dataset's base
# scale); "none" = random crop only (a no-op when the crop is the image size). "auto":
# "flip" on the synthetic dataset (its cue -> class rule is learned within a CPU budget
# without rescaling / photometric noise: 1500 steps reach mIoU ~0.62 at 32px, while "full"
# stayed at ~0.23 after 3000 steps), "full" elsewhere.
AUGMENTATIONS = ("auto", "full", "flip", "none")
# Peak learning rate when ``learning_rate`` is None: mmseg's SGD value (batch 8), and the
# AdamW value measured on the synthetic dataset (benchmarks/learning.py).
DEFAULT_LEARNING_RATES = {"sgd": 0.01, "adamw": 3e-3}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved as ``config.json`` beside the checkpoints.

    The defaults are the CLI's no-argument run: DANet on ``resnet_tiny`` (OS8) on the
    built-in ``synthetic`` dataset (``dataset_config=None`` resolves to its ``32px``
    config, crop 32x32), flips only (``augment="auto"``), AdamW lr 3e-3 poly, batch 8,
    1500 steps (eval every 500): a few CPU minutes (2 cores), and the cue -> class rule is
    learned (see ``tests/training/test_learning.py`` and the README for measured numbers).

    ``optimizer="auto"`` resolves (in ``validate``) to ``"adamw"`` on the synthetic dataset
    (SGD with momentum does not learn its cue -> class mapping within a CPU budget, see
    ``benchmarks/learning.py``) and to ``"sgd"`` (the mmsegmentation recipe) elsewhere;
    ``learning_rate=None`` to ``DEFAULT_LEARNING_RATES[optimizer]``; ``augment="auto"``
    to ``"flip"`` on the synthetic dataset and ``"full"`` elsewhere (see
    ``AUGMENTATIONS``).
    """

    model: str = "danet"
    backbone: str = "resnet_tiny"
    output_stride: int = 8
    dataset: str = "synthetic"
    data_dir: str = None
    manual_dir: str = None
    dataset_config: str = None
    train_split: str = "train"
    val_split: str = "validation"
    num_classes: int = None
    crop_size: tuple = None
    augment: str = "auto"
    batch_size: int = 8
    steps: int = 1500
    eval_every: int = 500
    checkpoint_every: int = None
    keep_checkpoints: int = 3
    optimizer: str = "auto"
    learning_rate: float = None
    end_learning_rate: float = 1e-4
    warmup_steps: int = 0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    head_lr_multiplier: float = 1.0
    gradient_accumulation_steps: int = None
    distribution: str = "auto"
    mixed_precision: str = None
    output_dir: str = None
    seed: int = 0
    eval_mode: str = "whole"
    eval_max_batches: int = None
    tensorboard: bool = True
    verbose: object = "auto"
    model_kwargs: dict = dataclasses.field(default_factory=dict)

    def validate(self):
        if self.steps <= 0:
            raise ValueError(f"steps must be > 0; got {self.steps}.")
        if self.eval_every <= 0:
            raise ValueError(f"eval_every must be > 0; got {self.eval_every}.")
        if self.steps % self.eval_every:
            raise ValueError(
                f"steps ({self.steps}) must be a multiple of eval_every ({self.eval_every}): "
                "training runs in whole evaluation intervals so resuming is exact."
            )
        if self.checkpoint_every and self.checkpoint_every % self.eval_every:
            raise ValueError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of eval_every "
                f"({self.eval_every})."
            )
        if self.dataset == "synthetic" and self.dataset_config is None:
            self.dataset_config = "32px"  # the demo: learns the cue in a few CPU minutes
        if self.dataset == "synthetic" and self.crop_size is None:
            size = str(self.dataset_config).split("px")[0]  # configs are named "<size>px..."
            if size.isdigit():
                self.crop_size = (int(size), int(size))
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}; got {self.augment!r}.")
        if self.augment == "auto":
            self.augment = "flip" if self.dataset == "synthetic" else "full"
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}.")
        if self.optimizer == "auto":
            self.optimizer = "adamw" if self.dataset == "synthetic" else "sgd"
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LEARNING_RATES[self.optimizer]
        if self.head_lr_multiplier <= 0:
            raise ValueError(f"head_lr_multiplier must be > 0; got {self.head_lr_multiplier}.")
        if self.head_lr_multiplier != 1.0 and self.optimizer != "sgd":
            raise ValueError("head_lr_multiplier is an SGD option (the official recipes'); "
                             f"optimizer is {self.optimizer!r}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}.")
        if self.end_learning_rate > self.learning_rate:
            raise ValueError(f"end_learning_rate ({self.end_learning_rate}) must be <= "
                             f"learning_rate ({self.learning_rate}).")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be > 0; got {self.batch_size}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be one of {MIXED_PRECISION}; got {self.mixed_precision!r}."
            )
        if self.distribution not in distribution_lib.DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {self.distribution!r}; choose from "
                             f"{list(distribution_lib.DISTRIBUTIONS)}.")
        if self.eval_mode not in evaluation.INFERENCE_MODES:
            raise ValueError(f"unknown eval_mode {self.eval_mode!r}; choose from "
                             f"{list(evaluation.INFERENCE_MODES)}.")
        if self.crop_size is not None:
            crop = tuple(int(c) for c in self.crop_size)
            if len(crop) != 2 or min(crop) <= 0:
                raise ValueError(f"crop_size must be (height, width); got {self.crop_size!r}.")
            self.crop_size = crop
        if self.output_dir is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            self.output_dir = os.path.join("runs", f"{self.model}-{stamp}")
        return self

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["crop_size"] = list(self.crop_size) if self.crop_size else None
        return d

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"_run"})
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}.")
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path):
        """Read ``config.json`` (a file or a run directory containing one)."""
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.exists(path):
            raise ValueError(f"no run configuration at {path!r} (expected a run directory "
                             "written by `keras-segattn train`).")
        with open(path) as f:
            return cls.from_dict(json.load(f))


# --- data -------------------------------------------------------------------------------------


def _dataset_info(config):
    from keras_segattn import data

    return data.dataset_info(config.dataset)


def build_datasets(config, global_batch_size):
    """(train, val) ``tf.data`` pipelines from :mod:`keras_segattn.data`.

    Training: infinite, shuffled, augmented as ``config.augment`` says,
    ``drop_remainder=True`` (every batch divides by the replica count). Validation: one
    pass, full-size images, partial batch kept (the evaluator pads it under JAX
    ``DataParallel``).
    """
    from keras_segattn import data

    kwargs = {}
    if config.data_dir:
        kwargs["data_dir"] = config.data_dir
    if config.manual_dir:
        kwargs["manual_dir"] = config.manual_dir
    if config.dataset_config:
        kwargs["config"] = config.dataset_config
    info = data.dataset_info(config.dataset)
    train_ds = data.load(config.dataset, config.train_split, **kwargs)
    val_ds = data.load(config.dataset, config.val_split, **kwargs)
    small = config.dataset == "synthetic"  # fits in memory: decode once
    augment = {"full": {}, "flip": dict(ratio_range=(1.0, 1.0), photometric=False),
               "none": dict(ratio_range=(1.0, 1.0), photometric=False, flip_prob=0.0)}
    train = data.make_pipeline(
        train_ds, training=True, crop_size=config.crop_size, batch_size=global_batch_size,
        scale=info.scale, num_classes=info.num_classes, name=config.dataset, seed=config.seed,
        drop_remainder=True, repeat=True, cache=small, **augment[config.augment])
    val = data.make_pipeline(
        val_ds, training=False, batch_size=global_batch_size, eval_scale=info.scale,
        num_classes=info.num_classes, name=config.dataset, drop_remainder=False, cache=small)
    return train, val


# --- model ------------------------------------------------------------------------------------


def recipe_arguments(config):
    """The ``keras_segattn.recipe`` numbers of a run (``Segmenter.compile`` keywords)."""
    return dict(optimizer_type=config.optimizer, steps=config.steps,
                learning_rate=config.learning_rate, momentum=config.momentum,
                weight_decay=config.weight_decay, end_learning_rate=config.end_learning_rate,
                warmup_steps=config.warmup_steps, head_lr_multiplier=config.head_lr_multiplier,
                gradient_accumulation_steps=config.gradient_accumulation_steps)


def build_optimizer(config, model=None):
    """The run's optimizer: ``keras_segattn.recipe.optimizer`` (AdamW, or SGD as mmseg/PyTorch
    define it; ``head_lr_multiplier`` on every variable outside ``model``'s backbone)."""
    return recipe.optimizer(model, **recipe_arguments(config))


def build_model(config, num_classes):
    """Build + compile the model with the standard recipe (inside a distribution scope)."""
    from keras_segattn import models

    kwargs = dict(config.model_kwargs)
    kwargs.setdefault("backbone", config.backbone)
    kwargs.setdefault("output_stride", config.output_stride)
    model = models.get(config.model, num_classes=num_classes, **kwargs)
    model.compile(**recipe_arguments(config))  # the recipe: saved with the model, reloads compiled
    return model


# --- train ------------------------------------------------------------------------------------


def _verbose(config):
    if config.verbose != "auto":
        return config.verbose
    return 1 if sys.stdout.isatty() else 2


def _tensorboard_available():
    """TensorBoard logging needs the ``tensorboard`` package (a dependency, but an install
    without it should still train): skip it, with a note, instead of failing at the first
    summary write."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        return True
    print("keras-segattn: TensorBoard logs skipped (`pip install tensorboard` to get them).",
          file=sys.stderr, flush=True)
    return False


def train(config, callbacks=(), train_dataset=None, val_dataset=None):
    """Train a model as described by ``config`` (a :class:`TrainConfig` or a dict).

    Writes to ``config.output_dir``: ``config.json`` (the resolved configuration),
    ``checkpoints/`` (atomic ``.keras`` every ``checkpoint_every`` steps), ``backup/``
    (resume state), ``logs/`` (TensorBoard), ``history.csv``, ``model.keras`` (final model)
    and ``metrics.json`` (final evaluation). Running again with the same ``output_dir``
    resumes after the last completed interval.

    Args:
        config: :class:`TrainConfig` or dict of its fields.
        callbacks: extra Keras callbacks (run first).
        train_dataset, val_dataset: optional ready-made batched datasets replacing the
            :mod:`keras_segattn.data` pipelines (``config.num_classes`` is then required).

    Returns:
        dict with ``model``, ``history`` (dict of lists), ``metrics``
        (:class:`~keras_segattn.evaluation.EvaluationResult`), ``output_dir``,
        ``model_path``, ``seconds``, ``distribution``.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    config.validate()
    class_names = None
    num_classes = config.num_classes
    if train_dataset is None:
        info = _dataset_info(config)
        num_classes = num_classes or info.num_classes
        class_names = list(info.class_names)
        if config.crop_size is None:
            config.crop_size = tuple(info.crop_size)
    elif config.crop_size is None:
        raise ValueError("config.crop_size is required with a custom train_dataset.")
    elif num_classes is None:
        raise ValueError("config.num_classes is required with a custom train_dataset.")
    if distribution_lib.resolve_distribution(config.distribution) == "multi_worker":
        distribution_lib.multi_worker_strategy()  # before any TF op (builds the datasets)
        # Only the chief writes to output_dir; other workers to output_dir/workers/<task>.
        config.output_dir = distribution_lib.worker_output_dir(config.output_dir)
    os.makedirs(config.output_dir, exist_ok=True)

    keras.utils.set_random_seed(config.seed)
    start = time.time()
    if train_dataset is None:  # first: missing data fails fast, before building the model
        train_dataset, val_dataset = build_datasets(config, config.batch_size)
    previous_policy = keras.mixed_precision.global_policy().name
    try:
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy(config.mixed_precision)
        with distribution_lib.distribution_scope(config.distribution) as dist:
            if config.batch_size % dist.num_replicas:
                raise ValueError(
                    f"batch_size {config.batch_size} (global) must be divisible by the "
                    f"{dist.num_replicas} replicas of distribution {dist.kind!r}.")
            model = build_model(config, num_classes)
        train_dataset = distribution_lib.prepare_dataset(train_dataset, dist.kind)
        record = config.to_dict()
        record["_run"] = {"backend": keras.backend.backend(), "keras": keras.__version__,
                          "distribution": dist.kind, "num_replicas": dist.num_replicas,
                          "num_classes": num_classes}
        callbacks_lib.atomic_write_text(os.path.join(config.output_dir, "config.json"),
                                        json.dumps(record, indent=2))
        epochs = config.steps // config.eval_every
        eval_cb = None
        if val_dataset is not None:
            eval_cb = callbacks_lib.EvaluationCallback(
                val_dataset, num_classes, class_names=class_names, mode=config.eval_mode,
                max_batches=config.eval_max_batches)
        cbs = callbacks_lib.make_callbacks(
            config.output_dir, steps_per_epoch=config.eval_every,
            checkpoint_every_epochs=(config.checkpoint_every or config.eval_every)
            // config.eval_every,
            keep_checkpoints=config.keep_checkpoints, evaluation_callback=eval_cb,
            tensorboard=config.tensorboard and _tensorboard_available(), extra=callbacks)
        history = model.fit(train_dataset, epochs=epochs, steps_per_epoch=config.eval_every,
                            callbacks=cbs, verbose=_verbose(config))
        if model.stop_training and any(
                isinstance(c, keras.callbacks.TerminateOnNaN) for c in cbs) and history.history \
                and any(v != v for v in history.history.get("loss", [0.0])[-1:]):
            raise RuntimeError("training stopped: the loss became NaN (try a lower learning "
                               "rate, warm-up, or mixed_precision=None).")
        model_path = os.path.join(config.output_dir, "model.keras")
        callbacks_lib.atomic_save_model(model, model_path)
        metrics = eval_cb.last_result if eval_cb is not None else None
        if metrics is not None:
            callbacks_lib.atomic_write_text(
                os.path.join(config.output_dir, "metrics.json"),
                json.dumps({"mIoU": metrics["mIoU"], "mAcc": metrics["mAcc"],
                            "aAcc": metrics["aAcc"], "IoU": list(map(float, metrics["IoU"])),
                            "Acc": list(map(float, metrics["Acc"])),
                            "class_names": metrics.get("class_names"),
                            "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations))},
                           indent=2, allow_nan=True))
        return {"model": model, "history": history.history, "metrics": metrics,
                "output_dir": config.output_dir, "model_path": model_path,
                "seconds": time.time() - start, "distribution": dist}
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

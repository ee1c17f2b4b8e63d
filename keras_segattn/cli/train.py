"""``keras-segattn train``: train a segmentation model with the standard recipe.

With no arguments it trains DANet on the ``resnet_tiny`` backbone (OS8) on the built-in
``synthetic`` dataset (its ``32px`` config, generated locally, no download; random flips
only) with AdamW (lr 3e-3, poly) for 1500 steps and prints the final per-class IoU and
mIoU: a few minutes on a laptop CPU, enough to learn the dataset's long-range cue. Other
datasets default to the mmsegmentation recipe (SGD momentum 0.9, lr 0.01, poly, full
augmentation).

Training runs in intervals of ``--eval-every`` steps (the last one shorter when ``--steps``
is not a multiple); after each, the model is evaluated and the run is saved. Running the
same command again (or ``--resume RUN_DIR``) continues an interrupted run from its last
saved interval, with the same data and random draws, so it ends where an uninterrupted
run ends; on a finished run it prints the result.
"""

import argparse
import os

from keras_segattn.common import pair_argument as _pair
# The choices of TrainConfig (keras_segattn.training.trainer / distribution, evaluation),
# written out so that `--help` does not import Keras; tests/test_cli_train.py checks them.
DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker", "data_parallel")
AUGMENTATIONS = ("auto", "full", "flip", "none")
OPTIMIZERS = ("auto", "sgd", "adamw")
MIXED_PRECISION = ("mixed_float16", "mixed_bfloat16")
EVAL_MODES = ("whole", "slide", "multiscale")



def add_arguments(parser):
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="danet",
                   help="model name, any of keras_segattn.models.list_models() (default: "
                        "%(default)s)")
    g.add_argument("--backbone", default="resnet_tiny",
                   help="backbone name, e.g. resnet50, resnet101 (default: %(default)s)")
    g.add_argument("--output-stride", type=int, default=8, choices=(8, 16, 32),
                   help="backbone output stride (default: %(default)s)")
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="synthetic",
                   help="synthetic (built in), cityscapes, ade20k, voc_aug or pascal_context "
                        "(default: %(default)s)")
    g.add_argument("--data-dir", help="tensorflow-datasets data directory (default: "
                                      "~/tensorflow_datasets)")
    g.add_argument("--manual-dir", help="folder with the manually downloaded archives "
                                        "(default: <data-dir>/downloads/manual)")
    g.add_argument("--dataset-config",
                   help="builder config; synthetic: 32px (default), 64px, 96px_far (where "
                        "attention beats FCN, see benchmarks/RESULTS.md) or 32px_tiny")
    g.add_argument("--crop-size", type=_pair, help="training crop HxW (default: the dataset's)")
    g.add_argument("--augment", default="auto", choices=AUGMENTATIONS,
                   help="full = random scale + crop + flip + photometric distortion "
                        "(mmsegmentation), flip = crop + flip, none = crop only; auto: flip on "
                        "the synthetic dataset, full elsewhere (default: %(default)s)")
    g = parser.add_argument_group("schedule")
    g.add_argument("--batch-size", type=int, default=8, help="global batch size (default: "
                                                             "%(default)s)")
    g.add_argument("--steps", type=int, default=1500,
                   help="total training iterations (default: %(default)s)")
    g.add_argument("--eval-every", type=int, default=500,
                   help="iterations between evaluations and saves; the last interval is "
                        "shorter when --steps is not a multiple (default: %(default)s)")
    g.add_argument("--optimizer", default="auto", choices=OPTIMIZERS,
                   help="auto: adamw on the synthetic dataset, sgd (momentum 0.9, the "
                        "mmsegmentation recipe) elsewhere (default: %(default)s)")
    g.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: 0.01 for sgd, 3e-3 for adamw)")
    g.add_argument("--end-lr", type=float, default=1e-4,
                   help="final poly learning rate (default: %(default)s)")
    g.add_argument("--warmup-steps", type=int, default=0,
                   help="linear warm-up iterations (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=5e-4,
                   help="sgd: L2 added to the gradient as in PyTorch/mmseg; adamw: decoupled "
                        "(default: %(default)s)")
    g.add_argument("--head-lr-multiplier", type=float, default=1.0,
                   help="sgd only: learning-rate factor of the heads (official DANet: 10; "
                        "default: %(default)s)")
    g.add_argument("--grad-accum", type=int, default=None,
                   help="gradient accumulation steps, >= 2 (default: none)")
    g = parser.add_argument_group("run")
    g.add_argument("--distribution", default="auto", choices=DISTRIBUTIONS,
                   help="auto: all local GPUs (TensorFlow mirrored, JAX data parallel), "
                        "multi_worker when TF_CONFIG is set, else one device "
                        "(default: %(default)s)")
    g.add_argument("--mixed-precision", choices=MIXED_PRECISION, default=None,
                   help="mixed-precision policy (default: float32)")
    g.add_argument("--sync-bn", action="store_true",
                   help="synchronized BatchNorm: batch statistics over all replicas under "
                        "TensorFlow mirrored/multi_worker (mmsegmentation's SyncBN; JAX "
                        "data_parallel already normalises over the global batch)")
    g.add_argument("--output-dir", help="run folder (default: runs/<model>-<timestamp>); "
                                        "an existing run there is continued")
    g.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR with its saved config.json")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the weights, data order and augmentation (default: "
                        "%(default)s)")
    g.add_argument("--eval-mode", default="whole", choices=EVAL_MODES,
                   help="evaluation inference mode (default: %(default)s)")
    g.add_argument("--no-tensorboard", action="store_true",
                   help="do not write TensorBoard logs to <output-dir>/logs")


def config_from_args(args):
    from keras_segattn.training import TrainConfig

    if args.resume:
        if not os.path.isdir(args.resume):
            raise ValueError(f"--resume: no run directory {args.resume!r}.")
        config = TrainConfig.load(args.resume)
        config.output_dir = args.resume
        return config
    return TrainConfig(
        model=args.model, backbone=args.backbone, output_stride=args.output_stride,
        dataset=args.dataset, dataset_config=args.dataset_config, data_dir=args.data_dir,
        manual_dir=args.manual_dir, crop_size=args.crop_size, augment=args.augment,
        batch_size=args.batch_size, steps=args.steps, eval_every=args.eval_every,
        optimizer=args.optimizer, learning_rate=args.lr, end_learning_rate=args.end_lr,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
        head_lr_multiplier=args.head_lr_multiplier,
        gradient_accumulation_steps=args.grad_accum, distribution=args.distribution,
        mixed_precision=args.mixed_precision, sync_batch_norm=args.sync_bn,
        output_dir=args.output_dir, seed=args.seed,
        eval_mode=args.eval_mode, tensorboard=not args.no_tensorboard)


def _check_names(config):
    from keras_segattn import data, models

    valid = [m.lower() for m in models.list_models()]
    if config.model.lower().replace("-", "").replace("_", "") not in [
            v.replace("_", "") for v in valid]:
        raise ValueError(f"unknown model {config.model!r}; choose from {models.list_models()}.")
    data.dataset_info(config.dataset)  # raises ValueError naming the known datasets
    if config.manual_dir and not os.path.isdir(config.manual_dir):
        raise ValueError(f"--manual-dir {config.manual_dir!r} does not exist or is not a "
                         "directory.")


def interrupted(args):
    """The Ctrl-C line: where the run is saved and how to continue it."""
    output_dir = getattr(args, "resolved_output_dir", None)
    if output_dir is None:
        return "interrupted before the run started; nothing was saved."
    from keras_segattn.training.run_dir import RunDirectory

    try:
        state = RunDirectory(output_dir).read_state()
    except ValueError:
        state = None
    again = f"keras-segattn train --resume {output_dir}"
    if state is None or not state.get("history"):
        return (f"interrupted before the first interval ended; nothing is saved in {output_dir} "
                f"yet. Run the same command (or {again}) to start it again.")
    return (f"interrupted. {output_dir} is saved at step {state['step']} of "
            f"{state['total_steps']}; run the same command (or {again}) to continue from there.")


def run(args):
    config = config_from_args(args)
    _check_names(config)
    config.validate()
    args.resolved_output_dir = config.output_dir
    from keras_segattn.training import train

    print(f"Training {config.model} ({config.backbone}, OS{config.output_stride}) on "
          f"{config.dataset}{f' ({config.dataset_config})' if config.dataset_config else ''}, "
          f"augment={config.augment}, for {config.steps} steps -> {config.output_dir}",
          flush=True)
    result = train(config)
    metrics = result["metrics"]
    if metrics is not None:
        print(metrics.table())
        print(f"Final {metrics.summary()}  ({config.steps} steps, {result['seconds']:.0f} s)")
    print(f"Saved {result['model_path']}")
    return 0

"""Speed and memory benchmarks: attention blocks and whole models, on any Keras backend.

    KERAS_BACKEND=jax python benchmarks/benchmark.py blocks --size 64 64 --channels 512
    KERAS_BACKEND=tensorflow python benchmarks/benchmark.py models --size 512 1024 --backbone resnet101

``blocks`` times one forward pass of each attention layer on a (1, H, W, C) feature map (the
mmseg head setting is C = 512 with C' = 64) and prints the analytic FLOPs of the attention
core and projections from ``../shared/docs/performance-anchors.md`` §4a, the achieved
GFLOP/s, and the peak memory the backend reports (GPU) or the process peak RSS (CPU).
``models`` times ``predict_on_batch`` of whole models like mmsegmentation's
``tools/analysis_tools/benchmark.py`` (batch 1, warm-up, then the mean of ``--repeat`` runs),
so the fps can be set against mmseg's model-zoo tables (V100, FP32, 1024x2048 whole image).

Numbers belong in benchmarks/RESULTS.md with the machine, backend and versions used.
"""

import argparse
import resource
import time

import keras
import numpy as np

import keras_segattn
from keras_segattn import layers


def block_specs(channels):
    """(name, layer factory, analytic core FLOPs(H, W), projection FLOPs(H, W))."""
    c = channels
    ck = max(1, c // 8)
    return [
        ("NonLocalBlock (C'=C/2)", lambda: layers.NonLocalBlock(reduction=2),
         lambda h, w: 2 * (h * w) ** 2 * (c // 2) * 2,
         lambda h, w: 2 * h * w * c * (3 * (c // 2)) + 2 * h * w * (c // 2) * c),
        ("PositionAttention (DANet PAM)", lambda: layers.PositionAttention(),
         lambda h, w: 2 * (h * w) ** 2 * (ck + c), lambda h, w: 2 * h * w * c * (2 * ck + c)),
        ("ChannelAttention (DANet CAM)", lambda: layers.ChannelAttention(),
         lambda h, w: 4 * h * w * c * c, lambda h, w: 0),
        ("CrissCrossAttention x1", lambda: layers.CrissCrossAttention(),
         lambda h, w: 2 * h * w * (h + w - 1) * (ck + c), lambda h, w: 2 * h * w * c * (2 * ck + c)),
        ("EfficientAttention (dk=64, dv=C)", lambda: layers.EfficientAttention(64, c),
         lambda h, w: 4 * h * w * 64 * c, lambda h, w: 2 * h * w * c * (2 * 64 + c) + 2 * h * w * c * c),
        ("LinearPositionAttention", lambda: layers.LinearPositionAttention(),
         lambda h, w: 4 * h * w * c * ck, lambda h, w: 2 * h * w * c * (2 * ck + c)),
        ("LinearChannelAttention", lambda: layers.LinearChannelAttention(),
         lambda h, w: 4 * h * w * c * c, lambda h, w: 0),
        ("InterlacedSparseAttention (8x8)",
         lambda: layers.InterlacedSparseAttention(c // 2, c, c, down_factor=(8, 8)),
         lambda h, w: 2 * h * w * (c // 2 + c) * (h * w / 64 + 64),
         lambda h, w: 2 * (2 * h * w * c * (c // 2) * 2 + 2 * h * w * (c // 2) ** 2 * 2 + 2 * h * w * c * c * 2)),
        ("FullyAttentional", lambda: layers.FullyAttentional(),
         lambda h, w: 8 * h * w * c * c, lambda h, w: 2 * h * w * c * c * 9),
        ("ChannelizedAxialAttention", lambda: layers.ChannelizedAxialAttention(c, key_channels=64),
         lambda h, w: 2 * h * w * (h + w) * 64 + 3 * h * w * (h + w) * c,
         lambda h, w: 2 * h * w * c * (2 * 64 + c)),
        ("SqueezeAttention", lambda: layers.SqueezeAttention(c),
         lambda h, w: 2 * h * w * c * c * 9 * 1.25 * 2, lambda h, w: 0),
    ]


def peak_memory_bytes():
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return tf.config.experimental.get_memory_info("GPU:0")["peak"], "GPU peak"
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.max_memory_allocated(), "GPU peak"
        elif backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "gpu":
                return device.memory_stats()["peak_bytes_in_use"], "GPU peak"
    except Exception:  # memory statistics are best-effort
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"


def time_model(model, inputs, warmup, repeat):
    for _ in range(warmup):
        keras.ops.convert_to_numpy(model.predict_on_batch(inputs))
    start = time.perf_counter()
    for _ in range(repeat):
        keras.ops.convert_to_numpy(model.predict_on_batch(inputs))
    return (time.perf_counter() - start) / repeat


def run_blocks(args):
    h, w = args.size
    x = np.random.default_rng(0).normal(size=(1, h, w, args.channels)).astype("float32")
    print(f"backend {keras.backend.backend()}, feature (1, {h}, {w}, {args.channels}), "
          f"policy {args.dtype_policy}")
    print(f"{'block':36s} {'core GF':>9s} {'proj GF':>9s} {'ms':>9s} {'GFLOP/s':>9s}  memory")
    previous_peak, _ = peak_memory_bytes()
    for name, factory, core, proj in block_specs(args.channels):
        if args.only and not any(o.lower() in name.lower() for o in args.only):
            continue
        keras.backend.clear_session()
        inputs = keras.Input((h, w, args.channels))
        model = keras.Model(inputs, factory()(inputs))
        try:
            seconds = time_model(model, x, args.warmup, args.repeat)
        except Exception as error:  # e.g. out of memory for N x N maps
            print(f"{name:36s} failed: {type(error).__name__}: {str(error)[:80]}")
            continue
        flops = core(h, w) + proj(h, w)
        memory, kind = peak_memory_bytes()
        # The CPU figure is the process-wide peak: only its growth is due to this block.
        growth = max(0, memory - previous_peak) if kind == "process peak RSS" else memory
        previous_peak = max(previous_peak, memory)
        label = "peak RSS growth" if kind == "process peak RSS" else kind
        print(f"{name:36s} {core(h, w) / 1e9:9.2f} {proj(h, w) / 1e9:9.2f} {seconds * 1e3:9.2f} "
              f"{flops / seconds / 1e9:9.1f}  {growth / 2**20:.0f} MiB ({label})")


def run_models(args):
    h, w = args.size
    x = np.random.default_rng(0).uniform(0, 255, size=(1, h, w, 3)).astype("float32")
    print(f"backend {keras.backend.backend()}, input (1, {h}, {w}, 3), backbone {args.backbone}, "
          f"policy {args.dtype_policy}")
    for name in args.models or keras_segattn.models.list_models():
        keras.backend.clear_session()
        model = keras_segattn.models.get(
            name, num_classes=args.num_classes, backbone=args.backbone, aux_head=False
        )
        model = model.inference_model() if hasattr(model, "inference_model") else model
        seconds = time_model(model, x, args.warmup, args.repeat)
        memory, kind = peak_memory_bytes()
        print(f"{name:18s} {model.count_params() / 1e6:8.2f} M params {1 / seconds:8.2f} fps "
              f"({seconds * 1e3:.0f} ms)  {memory / 2**20:.0f} MiB ({kind})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["blocks", "models"])
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--only", nargs="*", help="substrings of block names to run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dtype-policy", default="float32",
                        help="float32, mixed_float16 or mixed_bfloat16")
    args = parser.parse_args()
    keras.config.set_dtype_policy(args.dtype_policy)
    if args.what == "blocks":
        args.size = args.size or (32, 32)
        run_blocks(args)
    else:
        args.size = args.size or (256, 512)
        run_models(args)


if __name__ == "__main__":
    main()

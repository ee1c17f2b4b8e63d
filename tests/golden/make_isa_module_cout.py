"""Generate the ``isa_module_cout`` golden case (``ISA_Module`` with ``out_channels != in_channels``).

Not a test: run once by hand. It imports the **unmodified** official module from a checkout
of openseg-group/openseg.pytorch at commit ``aefc75517b09068d7131a69420bc5f66cb41f0ee``
(``lib/models/modules/isa_block.py``), draws its parameters and input as the other cases in
this folder do (README.md, "How the parameters were chosen"), runs it on the CPU in eval
mode and writes ``isa_module_cout.npz`` / ``.json`` next to this file. No upstream code is
stored in this repository::

    git clone https://github.com/openseg-group/openseg.pytorch /tmp/openseg
    git -C /tmp/openseg checkout aefc75517b09068d7131a69420bc5f66cb41f0ee
    python tests/golden/make_isa_module_cout.py /tmp/openseg

Checks recorded in the JSON: two runs are bitwise equal; the float32 output against a
float64 run of the same module; an independent NumPy float64 re-derivation (written from the
maths in ``what_matters``, not from the upstream code) against the float32 output; and how
far the output moves under the mistake this case exists to catch (the ISA block keeping the
input's channels, i.e. ``ISA_Block(in, key, value, in)``, and the fusion conv seeing
``2 * in`` channels).
"""

import json
import os
import re
import sys

import numpy as np
import torch

CASE = "isa_module_cout"
COMMIT = "aefc75517b09068d7131a69420bc5f66cb41f0ee"
PATH = "lib/models/modules/isa_block.py"
SEED = 1013
KWARGS = dict(in_channels=16, key_channels=8, value_channels=12, out_channels=24,
              down_factors=[[4, 4]], dropout=0.05, bn_type="torchbn")
SHAPE_NCHW = (2, 16, 10, 9)  # padded to 12 x 12: rows (1, 1), columns (1, 2)
TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}
HERE = os.path.dirname(os.path.abspath(__file__))


def _dumps(obj):
    """``json.dumps(indent=1)`` with lists of scalars on one line (this folder's format)."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text) + "\n"


def _init_(module):
    """The parameter draws of README.md: conv ~ N(0, 1/fan_in); BN weight ~ U(0.5, 1.5),
    bias ~ N(0, 0.2), running_mean ~ N(0, 0.2), running_var ~ U(0.5, 1.5)."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if tensor.ndim == 4:
                fan_in = tensor.shape[1] * tensor.shape[2] * tensor.shape[3]
                tensor.copy_(torch.randn(tensor.shape) / np.sqrt(fan_in))
            elif name.endswith("running_var") or name.endswith(".weight"):
                tensor.copy_(torch.rand(tensor.shape) + 0.5)
            else:  # BN bias, running_mean
                tensor.copy_(torch.randn(tensor.shape) * 0.2)


def _role(key, shape):
    if len(shape) == 4:
        return ("torch Conv2d weight (out, in, kh, kw); Keras Conv2D kernel = "
                "w.transpose(2, 3, 1, 0) -> (kh, kw, in, out)")
    if key.endswith("num_batches_tracked"):
        return "BN counter, unused in eval (ignore)"
    return {"weight": "BN scale (Keras gamma)", "bias": "BN shift (Keras beta)",
            "running_mean": "BN moving_mean", "running_var": "BN moving_variance"}[key.rsplit(".", 1)[1]]


def _numpy_reference(x, params, in_channels, out_channels, key_channels, factor):
    """Float64 ISA_Module from the maths alone (NHWC, explicit index sets per group)."""
    def conv(y, key):
        return y @ params[key][:, :, 0, 0].T

    def bn_relu(y, prefix):
        y = (y - params[prefix + ".running_mean"]) / np.sqrt(params[prefix + ".running_var"] + 1e-5)
        return np.maximum(y * params[prefix + ".weight"] + params[prefix + ".bias"], 0.0)

    def attention(y, prefix):  # y: (N, C) -> (N, out)
        q = bn_relu(conv(bn_relu(conv(y, f"{prefix}.f_query.0.weight"), f"{prefix}.f_query.1.0"),
                         f"{prefix}.f_query.2.weight"), f"{prefix}.f_query.3.0")
        k = bn_relu(conv(bn_relu(conv(y, f"{prefix}.f_key.0.weight"), f"{prefix}.f_key.1.0"),
                         f"{prefix}.f_key.2.weight"), f"{prefix}.f_key.3.0")
        v = conv(y, f"{prefix}.f_value.weight")
        e = q @ k.T * key_channels ** -0.5
        a = np.exp(e - e.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        return bn_relu(conv(a @ v, f"{prefix}.W.0.weight"), f"{prefix}.W.1.0")

    b, h, w, _ = x.shape
    ph, pw = factor
    qh, qw = -(-h // ph), -(-w // pw)
    top, left = (qh * ph - h) // 2, (qw * pw - w) // 2
    xp = np.zeros((b, qh * ph, qw * pw, in_channels))
    xp[:, top:top + h, left:left + w] = x
    mid = np.zeros((b, qh * ph, qw * pw, out_channels))
    for n in range(b):
        for p in range(ph):
            for q in range(pw):
                rows, cols = np.meshgrid(np.arange(qh) * ph + p, np.arange(qw) * pw + q, indexing="ij")
                mid[n, rows.ravel(), cols.ravel()] = attention(
                    xp[n, rows.ravel(), cols.ravel()], "stages.0.long_range_sa")
    out = np.zeros_like(mid)
    for n in range(b):
        for i in range(qh):
            for j in range(qw):
                block = mid[n, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw].reshape(-1, out_channels)
                out[n, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw] = attention(
                    block, "stages.0.short_range_sa").reshape(ph, pw, out_channels)
    context = out[:, top:top + h, left:left + w]
    fused = np.concatenate([x, context], axis=-1)  # x FIRST
    return bn_relu(conv(fused, "conv_bn.0.weight"), "conv_bn.1.0")


def main(openseg_root):
    sys.path.insert(0, openseg_root)
    from lib.models.modules.isa_block import ISA_Module  # the official file, unmodified

    torch.manual_seed(SEED)
    module = ISA_Module(**KWARGS)
    _init_(module)
    module.eval()
    x = torch.randn(SHAPE_NCHW)
    with torch.no_grad():
        y = module(x)
        again = module(x)
        y64 = module.double()(x.double()).float()
    module.float()
    assert torch.equal(y, again)
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    x_nhwc = x.permute(0, 2, 3, 1).numpy()
    y_nhwc = y.permute(0, 2, 3, 1).numpy()
    params64 = {k: v.astype("float64") for k, v in state.items()}
    numpy_ref = _numpy_reference(x_nhwc.astype("float64"), params64, KWARGS["in_channels"],
                                 KWARGS["out_channels"], KWARGS["key_channels"],
                                 KWARGS["down_factors"][0])
    drift = np.abs(y_nhwc - y64.permute(0, 2, 3, 1).numpy())
    rederived = np.abs(y_nhwc - numpy_ref)
    limit = TOLERANCE["atol"] + TOLERANCE["rtol"] * np.abs(y_nhwc)

    # The mistake this case catches: an ISA block that keeps C_in inside (our old ISAModule).
    torch.manual_seed(SEED)
    wrong = ISA_Module(**dict(KWARGS, out_channels=KWARGS["in_channels"]))
    _init_(wrong)
    wrong_conv = torch.nn.Conv2d(2 * KWARGS["in_channels"], KWARGS["out_channels"], 1, bias=False)
    with torch.no_grad():
        wrong_conv.weight.copy_(module.conv_bn[0].weight[:, :2 * KWARGS["in_channels"]])
        context = wrong.stages[0](x)
        y_wrong = module.conv_bn[1](wrong_conv(torch.cat([x, context], 1)))

    arrays = {"input": x_nhwc, "output": y_nhwc}
    arrays.update({f"param/{k}": v for k, v in state.items()})
    np.savez_compressed(os.path.join(HERE, f"{CASE}.npz"), **arrays)
    meta = {
        "case": CASE,
        "set": "public",
        "module": "isa_module",
        "reference": {
            "repo": "openseg-group/openseg.pytorch", "commit": COMMIT, "path": PATH,
            "class": "ISA_Module",
            "url": f"https://github.com/openseg-group/openseg.pytorch/blob/{COMMIT}/{PATH}",
        },
        "how_produced": (
            "tests/golden/make_isa_module_cout.py imported the official isa_block.py from a "
            f"checkout of openseg.pytorch at {COMMIT}, unmodified (with its lib/ package for "
            "ModuleHelper), and ran ISA_Module on the CPU in eval mode under torch "
            f"{torch.__version__}. No upstream code is stored in this repository."),
        "constructor_kwargs": KWARGS,
        "forward_kwargs": {},
        "reference_modifications_and_shims": [],
        "seed": SEED,
        "batch": SHAPE_NCHW[0],
        "input_shape_nhwc": list(x_nhwc.shape),
        "input_std": 1.0,
        "output_keys": ["output"],
        "output_shapes_nhwc": [list(y_nhwc.shape)],
        "output_meaning": None,
        "param_layout": "torch state_dict layout, untouched (Conv2d weight (out, in, kh, kw))",
        "params": [{"key": k, "shape": list(v.shape), "dtype": str(v.dtype), "role": _role(k, v.shape)}
                   for k, v in state.items()],
        "what_matters": [
            "out_channels (24) != in_channels (16): ISA_Block(in, key, value, out) projects to "
            "out_channels in the long-range stage (long_range_sa: in -> out, its W conv "
            "value -> out); the short-range stage works on out channels (short_range_sa: out -> out).",
            "The fusion conv sees concat([x, ISA_Block(x)]) = in + out = 40 channels, x FIRST; "
            "y = Dropout2d(ReLU(BN(Conv1x1_no_bias(concat)))), Dropout2d the identity in eval.",
            "Padding, grouping and SelfAttentionBlock2D as in the isa_block / isa_module cases: "
            "input 10 x 9 with down_factor (4, 4) is padded to 12 x 12, rows (1, 1), columns (1, 2).",
            "BatchNorm2d eval with eps 1e-5; bn_type='torchbn' = BatchNorm2d + ReLU.",
        ],
        "tolerance": dict(TOLERANCE, rule="np.testing.assert_allclose(keras_out, npz['output'], atol=atol, rtol=rtol)"),
        "eval_mode": True,
        "checks": {
            "deterministic_rerun_bitwise_equal": True,
            "float32_vs_float64": [{"max_abs": float(drift.max()),
                                    "max_err_over_tolerance": float((drift / limit).max())}],
            "independent_numpy_float64_rederivation": {
                "max_abs": float(rederived.max()),
                "max_err_over_tolerance": float((rederived / limit).max())},
            "max_abs_change_if_the_isa_block_kept_in_channels": float(
                (y - y_wrong).abs().max()),
            "output_std": [float(y_nhwc.std())],
            "output_frac_exact_zero": [float((y_nhwc == 0).mean())],
        },
        "param_init_for_this_file": (
            "torch.manual_seed(seed); conv weight ~ N(0, 1/fan_in); BN weight ~ U(0.5, 1.5), "
            "bias ~ N(0, 0.2), running_mean ~ N(0, 0.2), running_var ~ U(0.5, 1.5); "
            "input ~ N(0, input_std^2)"),
        "torch_version": torch.__version__,
        "dtype": "float32",
    }
    with open(os.path.join(HERE, f"{CASE}.json"), "w") as f:
        f.write(_dumps(meta))
    with open(os.path.join(HERE, "index.json")) as f:
        index = json.load(f)
    entry = {"case": CASE, "module": "isa_module",
             "reference": f"openseg-group/openseg.pytorch@{COMMIT}:{PATH}::ISA_Module",
             "constructor_kwargs": KWARGS, "forward_kwargs": {},
             "input_shape_nhwc": meta["input_shape_nhwc"], "output_keys": ["output"],
             "output_shapes_nhwc": meta["output_shapes_nhwc"], "tolerance": TOLERANCE,
             "files": [f"{CASE}.npz", f"{CASE}.json"],
             "npz_bytes": os.path.getsize(os.path.join(HERE, f"{CASE}.npz"))}
    index["cases"] = [c for c in index["cases"] if c["case"] != CASE] + [entry]
    index["cases"].sort(key=lambda c: c["case"])
    index["n_cases"] = len(index["cases"])
    with open(os.path.join(HERE, "index.json"), "w") as f:
        f.write(_dumps(index))
    print(json.dumps(meta["checks"], indent=1))


if __name__ == "__main__":
    main(sys.argv[1])

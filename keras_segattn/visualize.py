"""Plot what the attention of a model looks at, in the style of the papers' figures.

* Position attention (DANet ``PositionAttention``, ``NonLocalBlock``): the attention row of
  one query pixel, an ``(h, w)`` map over the feature grid (DANet Fig. 4).
* Criss-cross attention (CCNet ``CrissCrossAttention``): the weights of the query's row and
  column after one pass, and the effective weights after the recurrence (R = 2): the same
  layer is applied twice, ``A_eff = A_2 @ A_1`` with each ``A_r`` the dense ``N x N`` matrix
  of pass r, so pixel ``k`` reaches query ``i`` through every ``j`` on ``i``'s cross that has
  ``k`` on its own cross (CCNet Fig. 6).
* Channel attention (DANet ``ChannelAttention``): the ``C x C`` matrix.
* Scale attention (``ScaleAttention`` of Attention-to-Scale): per-pixel weight of each scale.

The attention is obtained without changing the model: the target layer's ``call`` is
wrapped for one eager forward pass to record its inputs, then the layer is called again on
those inputs with ``return_attention_scores=True``. Works on TensorFlow, JAX and PyTorch.

Example:
>>> fig = plot_attention(model, image, pixel=(40, 60), output="attention.png")  # doctest: +SKIP
"""

import numpy as np

# The kinds of attention this module draws. An attention layer says which kind it is with a
# class attribute ``attention_kind`` (``layers.PositionAttention.attention_kind ==
# "position"``), so a new mechanism of a known kind needs no change here.
KIND_NAMES = ("position", "criss_cross", "channel", "scale")


def _iter_layers(layer, seen=None):
    seen = set() if seen is None else seen
    for sub in getattr(layer, "layers", None) or getattr(layer, "_layers", None) or []:
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        yield sub
        yield from _iter_layers(sub, seen)
    # Sublayers created as attributes of custom layers (heads).
    for sub in getattr(layer, "_flatten_layers", lambda **k: [])(include_self=False, recursive=True):
        if id(sub) not in seen:
            seen.add(id(sub))
            yield sub


def find_attention_layers(model, kinds=None):
    """Attention layers of ``model`` (searched recursively) as ``[(layer, kind), ...]``."""
    found = []
    for layer in _iter_layers(model):
        kind = getattr(type(layer), "attention_kind", None)
        if kind and (kinds is None or kind in kinds):
            found.append((layer, kind))
    return found


def _capture_inputs(model, layers, images):
    """Run ``model`` once eagerly and record the inputs of every call of ``layers``."""
    import keras

    records = {id(layer): [] for layer in layers}
    originals = {}
    for layer in layers:
        original = layer.call
        originals[id(layer)] = layer

        def wrapper(*args, _original=original, _key=id(layer), **kwargs):
            records[_key].append((args, {k: v for k, v in kwargs.items() if k != "return_attention_scores"}))
            return _original(*args, **kwargs)

        object.__setattr__(layer, "call", wrapper)
    try:
        model(keras.ops.convert_to_tensor(images), training=False)
    finally:
        for layer in layers:
            layer.__dict__.pop("call", None)
    return records


def _to_numpy(x):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x), "float32")


def criss_cross_dense(attention):
    """``(H, W, H + W)`` criss-cross weights of one image -> dense ``(N, N)`` matrix."""
    height, width = attention.shape[:2]
    n = height * width
    dense = np.zeros((n, n), "float32")
    rows = np.arange(height)
    cols = np.arange(width)
    for h in range(height):
        for w in range(width):
            q = h * width + w
            dense[q, rows * width + w] += attention[h, w, :height]  # the column
            dense[q, h * width + cols] += attention[h, w, height:]  # the row
    return dense


def attention_maps(model, image, pixel=None, layers=None):
    """Attention of every supported layer for one image.

    Args:
        model: a Keras model (images RGB ``[0, 255]``).
        image: ``(H, W, 3)`` array.
        pixel: ``(y, x)`` query pixel in image coordinates (default: the centre).
        layers: optional list of layer names to restrict to.

    Returns:
        list of dicts ``{"layer", "kind", "feature_size", "query", ...}`` with, per kind:
        ``position``: ``"map"`` ``(h, w)``; ``criss_cross``: ``"passes"`` (list of ``(h, w)``
        maps, one per call of the layer) and ``"effective"`` (``(h, w)``, after all
        passes); ``channel``: ``"matrix"`` ``(C, C)``; ``scale``: ``"weights"`` ``(h, w, S)``.
    """
    image = np.asarray(image, "float32")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"attention_maps: expected an (H, W, 3) image, got shape {image.shape}")
    height, width = image.shape[:2]
    pixel = (height // 2, width // 2) if pixel is None else tuple(int(p) for p in pixel)
    if not (0 <= pixel[0] < height and 0 <= pixel[1] < width):
        raise ValueError(f"attention_maps: pixel {pixel} is outside the {height}x{width} image")
    found = find_attention_layers(model)
    if layers:
        found = [(layer, kind) for layer, kind in found if layer.name in layers]
    if not found:
        raise ValueError(
            f"attention_maps: {model.name!r} has no layer with attention to show (looked for "
            f"layers with an attention_kind in {list(KIND_NAMES)}{' named ' + str(list(layers)) if layers else ''})"
        )
    records = _capture_inputs(model, [layer for layer, _ in found], image[None])
    results = []
    for layer, kind in found:
        calls = records[id(layer)]
        if not calls:
            continue
        entry = {"layer": layer.name, "kind": kind}
        matrices = []
        for args, kwargs in calls:
            _, scores = layer(*args, return_attention_scores=True, **kwargs)
            scores = _to_numpy(scores)[0]
            feature = args[0]
            if isinstance(feature, (list, tuple)):  # ScaleAttention: (score maps, features)
                feature = feature[0]
            fh, fw = int(feature.shape[1]), int(feature.shape[2])
            matrices.append((scores, fh, fw))
        scores, fh, fw = matrices[0]
        qy = min(int(pixel[0] * fh / height), fh - 1)
        qx = min(int(pixel[1] * fw / width), fw - 1)
        entry.update(feature_size=(fh, fw), query=(qy, qx))
        q = qy * fw + qx
        if kind == "position":
            entry["map"] = scores[q].reshape(fh, fw)
        elif kind == "criss_cross":
            dense = [criss_cross_dense(s) for s, _, _ in matrices]
            entry["passes"] = [d[q].reshape(fh, fw) for d in dense]
            effective = dense[0]
            for d in dense[1:]:
                effective = d @ effective
            entry["effective"] = effective[q].reshape(fh, fw)
            if len(dense) == 1:
                # One call in the graph: show the recurrence R = 2 of the shared layer.
                args, kwargs = calls[0]
                out1, _ = layer(*args, return_attention_scores=True, **kwargs)
                _, scores2 = layer(out1, return_attention_scores=True, **kwargs)
                second = criss_cross_dense(_to_numpy(scores2)[0])
                entry["effective"] = (second @ dense[0])[q].reshape(fh, fw)
                entry["passes"].append(second[q].reshape(fh, fw))
        elif kind == "channel":
            entry["matrix"] = scores
        elif kind == "scale":
            entry["weights"] = scores
        results.append(entry)
    return results


def _upsample(array, size):
    """Nearest-neighbour upsampling of an ``(h, w)`` map to ``size`` for display."""
    h, w = array.shape[:2]
    ys = np.minimum((np.arange(size[0]) * h / size[0]).astype(int), h - 1)
    xs = np.minimum((np.arange(size[1]) * w / size[1]).astype(int), w - 1)
    return array[ys][:, xs]


def plot_attention(model, image, pixel=None, output=None, layers=None, max_panels=6, dpi=100):
    """Figure of the attention of ``model`` for ``image`` (matplotlib, Agg backend).

    Returns the ``matplotlib.figure.Figure``; also saves it to ``output`` when given.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    image = np.asarray(image)
    height, width = image.shape[:2]
    pixel = (height // 2, width // 2) if pixel is None else tuple(int(p) for p in pixel)
    entries = attention_maps(model, image, pixel, layers)
    panels = [("input", None, None)]
    for e in entries:
        name = e["layer"]
        if e["kind"] == "position":
            panels.append((f"{name}\nposition attention", e["map"], "overlay"))
        elif e["kind"] == "criss_cross":
            panels.append((f"{name}\ncriss-cross, pass 1", e["passes"][0], "overlay"))
            panels.append((f"{name}\neffective after R={len(e['passes'])}", e["effective"], "overlay"))
        elif e["kind"] == "channel":
            panels.append((f"{name}\nchannel attention (C x C)", e["matrix"], "matrix"))
        elif e["kind"] == "scale":
            weights = e["weights"]
            for s in range(weights.shape[-1]):
                panels.append((f"{name}\nscale {s} weight", weights[..., s], "overlay"))
    panels = panels[: max_panels + 1]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.3), dpi=dpi)
    axes = np.atleast_1d(axes)
    display = np.clip(image, 0, 255).astype("uint8")
    for ax, (title, data, style) in zip(axes, panels):
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if style is None:
            ax.imshow(display)
        elif style == "matrix":
            im = ax.imshow(data, cmap="viridis")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
            continue
        else:
            ax.imshow(display)
            ax.imshow(_upsample(data, (height, width)), cmap="jet", alpha=0.55)
        ax.plot([pixel[1]], [pixel[0]], marker="+", color="white", markersize=12, mew=2)
    fig.tight_layout()
    if output is not None:
        fig.savefig(output, dpi=dpi)
    return fig

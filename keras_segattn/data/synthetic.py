"""The built-in "synthetic" dataset: labels that need long-range context.

Design rationale
----------------
Attention heads (DANet, CCNet, OCR, ...) exist to bring *long-range* context into each
pixel's prediction. A dataset on which that matters, that is generated locally (no
download) and that a small model learns on a CPU in minutes, lets the examples, the tests
and the training loop show the effect without Cityscapes.

Each ``size x size`` RGB image (default 64x64) contains:

* a **background** (class 0): a greyish, randomly tinted, smoothly noisy texture;
* 1-3 **shapes** (disc, square or diamond, radius ``size/10 .. size/6``) filled with a grey
  stripe texture (random orientation, period and grey levels). Shape appearance is drawn
  *independently of the class*: locally, every shape class looks the same;
* a small **cue marker** (``size/8`` square, labelled background) of a saturated colour in
  one random image corner. **The colour of the cue decides the class of every shape in
  the image** (red -> 1, chartreuse -> 2, cyan -> 3, violet -> 4;
  hues 90 degrees apart, robust to photometric augmentation). Every shape pixel is at
  least ``size/4`` pixels away from the marker (rejection sampling), so a network whose
  receptive field is smaller than that can find the shapes but cannot tell their classes
  apart (its best is ~1/(K-1) accuracy on shape pixels), while self-attention or global
  pooling can read the cue from anywhere in the image.

``make_synthetic_example(rng, size, cue_class=c)`` draws exactly the same random numbers
whatever ``c`` is, so two calls with equal generator states produce images that differ
only inside the cue marker while the shape labels differ: the long-range property the
tests check.

What it shows, measured (``benchmarks/RESULTS.md``, resnet_tiny OS8, equal head widths): at
32-64 px every head learns the cue -> class rule (the dilated backbone's ~240 px receptive field
reaches the cue). With the cue larger and farther (``cue_fraction=1/4``,
``distance_fraction=3/8`` at 96 px: the builder's ``96px_far`` config), attention heads with
image-level context learn the rule reliably and FCN does not (1600 CPU steps, mIoU of three
runs: CAANet 0.924 / 0.918 / 0.919, FCN 0.705 / 0.910 / 0.683; SANet 0.952, DANet 0.679 in one
run each).

Defaults: ``NUM_CLASSES = 5`` (background + 4 cue colours), ``IMAGE_SIZE = 64``. The
tensorflow-datasets builder (``keras_segattn/data/builders/synthetic``) stores 1000 train
and 200 validation examples, each from ``np.random.default_rng([split_seed, index])``, so
the dataset is identical on every machine.
"""

import numpy as np

IMAGE_SIZE = 64
NUM_CLASSES = 5
# Saturated cue colours; class c (1..K-1) uses CUE_COLORS[c - 1]. The first four hues are
# 90 degrees apart (red 0, chartreuse 90, cyan 180, violet 270), so mmseg's photometric
# distortion (hue shift up to +-36 degrees) can never turn one cue into another; the
# extra colours (num_classes > 5) sit in between and lose that guarantee.
CUE_COLORS = (
    (230, 25, 25), (128, 230, 25), (25, 230, 230), (128, 25, 230),
    (230, 128, 25), (25, 230, 128), (25, 128, 230),
)
_CUE_NAMES = ("red", "chartreuse", "cyan", "violet", "orange", "spring_green", "azure")
CLASS_NAMES = ("background",) + tuple(f"{n}_cue_shape" for n in _CUE_NAMES[: NUM_CLASSES - 1])
PALETTE = ((0, 0, 0),) + CUE_COLORS[: NUM_CLASSES - 1]
# Per-split seeds of the builder: example i of split s comes from default_rng([seed_s, i]).
SPLIT_SEEDS = {"train": 0, "validation": 1}


def make_synthetic_example(rng, size=IMAGE_SIZE, num_classes=NUM_CLASSES, cue_class=None,
                           max_shapes=3, cue_fraction=1 / 8, distance_fraction=1 / 4):
    """Generate one synthetic example (pure NumPy, deterministic given ``rng``).

    Args:
        rng: a ``numpy.random.Generator`` (e.g. ``np.random.default_rng(0)``).
        size: image height and width in pixels (>= 32).
        num_classes: classes including background, 2..8.
        cue_class: force the class ``1..num_classes-1`` of the shapes (and the cue
            colour). ``None`` draws it. The random stream consumed does not depend on
            this argument.
        max_shapes: at most this many shapes (at least one is attempted).
        cue_fraction: side of the square cue marker as a fraction of ``size`` (default
            1/8; at least 4 pixels).
        distance_fraction: minimum distance from every shape pixel to the marker as a
            fraction of ``size`` (default 1/4).

    Returns:
        ``(image, label)``: uint8 ``(size, size, 3)`` RGB image and uint8 ``(size, size)``
        label map with values in ``[0, num_classes)``.

    Example:

    >>> import numpy as np
    >>> image, label = make_synthetic_example(np.random.default_rng(0))
    >>> image.shape, label.shape, int(label.max()) < 5
    ((64, 64, 3), (64, 64), True)
    """
    if not 2 <= num_classes <= len(CUE_COLORS) + 1:
        raise ValueError(f"num_classes must be in [2, {len(CUE_COLORS) + 1}], got {num_classes}.")
    if size < 32:
        raise ValueError(f"size must be >= 32 (the cue must be far from the shapes), got {size}.")
    drawn_class = int(rng.integers(1, num_classes))
    if cue_class is None:
        cls = drawn_class
    elif 1 <= int(cue_class) < num_classes:
        cls = int(cue_class)
    else:
        raise ValueError(f"cue_class must be in [1, {num_classes}), got {cue_class}.")

    # Background: greyish tint + coarse blobs + fine noise.
    base = rng.uniform(70.0, 170.0) + rng.uniform(-15.0, 15.0, size=3)
    cells = -(-size // 8)
    coarse = rng.normal(0.0, 12.0, (cells, cells, 1))
    coarse = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[:size, :size]
    image = base + coarse + rng.normal(0.0, 6.0, (size, size, 3))
    label = np.zeros((size, size), np.uint8)

    # Cue marker in a random corner.
    if not 0 < cue_fraction <= 0.5 or not 0 <= distance_fraction < 1:
        raise ValueError(f"cue_fraction must be in (0, 0.5] and distance_fraction in [0, 1); "
                         f"got {cue_fraction}, {distance_fraction}.")
    m = max(4, int(size * cue_fraction))
    corner = int(rng.integers(4))
    y0 = 0 if corner in (0, 1) else size - m
    x0 = 0 if corner in (0, 2) else size - m
    min_dist = size * distance_fraction

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    num_shapes = int(rng.integers(1, max_shapes + 1))
    for _ in range(num_shapes):
        kind = int(rng.integers(3))
        radius = rng.uniform(size / 10.0, size / 6.0)
        period = int(rng.integers(3, 7))
        orientation = int(rng.integers(4))
        phase = int(rng.integers(period))
        lo, hi = rng.uniform(20.0, 80.0), rng.uniform(170.0, 235.0)
        candidates = rng.uniform(radius + 1.0, size - radius - 1.0, size=(20, 2))
        # Distance from each candidate centre to the marker square, minus the radius.
        dy = np.maximum(np.maximum(y0 - candidates[:, 0], candidates[:, 0] - (y0 + m)), 0.0)
        dx = np.maximum(np.maximum(x0 - candidates[:, 1], candidates[:, 1] - (x0 + m)), 0.0)
        ok = np.hypot(dy, dx) - 1.5 * radius >= min_dist
        if not ok.any():
            continue
        cy, cx = candidates[int(np.argmax(ok))]
        ry, rx = yy - cy, xx - cx
        if kind == 0:
            mask = ry**2 + rx**2 <= radius**2
        elif kind == 1:
            mask = (np.abs(ry) <= 0.85 * radius) & (np.abs(rx) <= 0.85 * radius)
        else:
            mask = np.abs(ry) + np.abs(rx) <= 1.2 * radius
        coord = (yy, xx, yy + xx, yy - xx)[orientation] + phase
        stripes = np.where((coord // max(period // 2, 1)) % 2 == 0, lo, hi)
        image[mask] = stripes[mask][:, None]
        label[mask] = cls

    # Draw the cue last; its noise is drawn whatever the class.
    cue_noise = rng.normal(0.0, 6.0, (m, m, 3))
    image[y0:y0 + m, x0:x0 + m] = np.asarray(CUE_COLORS[cls - 1], np.float64) + cue_noise
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, label


def synthetic_arrays(num_examples, split="train", size=IMAGE_SIZE, num_classes=NUM_CLASSES,
                     **options):
    """NumPy arrays of the synthetic dataset, without tensorflow-datasets.

    Example ``i`` of ``split`` is ``make_synthetic_example(np.random.default_rng(
    [SPLIT_SEEDS[split], i]), size, num_classes)``, exactly what the tfds builder stores.

    ``options`` are passed to ``make_synthetic_example`` (``cue_fraction``,
    ``distance_fraction``, ``max_shapes``).

    Returns:
        ``(images, labels)``: uint8 ``(N, size, size, 3)`` and uint8 ``(N, size, size)``.
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}.")
    images = np.empty((num_examples, size, size, 3), np.uint8)
    labels = np.empty((num_examples, size, size), np.uint8)
    for i in range(num_examples):
        rng = np.random.default_rng([SPLIT_SEEDS[split], i])
        images[i], labels[i] = make_synthetic_example(rng, size, num_classes, **options)
    return images, labels

"""Joint image + label-map augmentation for tf.data (mmsegmentation's standard recipe).

Why TensorFlow ops here, when the rest of keras_segattn uses ``keras.ops`` only: these
functions run inside ``tf.data.Dataset.map``, i.e. in a TensorFlow graph on the input
pipeline, whatever the Keras backend is (tf.data is the backend-neutral input path that
``model.fit`` accepts on TensorFlow, JAX and PyTorch). ``keras.layers`` augmentation
layers also work there, but they pad/fill label maps with 0 (a real class) and their
``RandomCrop`` cannot pad, so we use ``tf.image`` / ``tf.random.stateless_*`` directly:
padding fills the image with 0 and the label with the ignore label (255).

All random functions are *stateless*: they take a ``seed`` tensor of shape ``(2,)``
(int32/int64), so a pipeline with a fixed seed is reproducible, also with parallel maps.

Conventions: ``image`` is ``(H, W, 3)`` (any dtype; returned as float32 in [0, 255]),
``label`` is ``(H, W)`` integer (returned as int32).
"""

import tensorflow as tf

from keras_segattn.common import IGNORE_INDEX as IGNORE_LABEL  # 255


def _split(seed, num):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


def _as_float_image(image):
    return tf.cast(image, tf.float32)


def _as_int_label(label):
    label = tf.convert_to_tensor(label)
    if label.shape.rank == 3:
        label = tf.squeeze(label, axis=-1)
    return tf.cast(label, tf.int32)


def resize(image, label, size):
    """Resize image (bilinear) and label (nearest) to ``size = (height, width)``."""
    image = _as_float_image(image)
    label = _as_int_label(label)
    size = tf.cast(size, tf.int32)
    image = tf.image.resize(image, size, method="bilinear")
    label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]
    return image, label


def rescale_keep_ratio(image, label, scale):
    """Resize keeping the aspect ratio so the image fits in ``scale``.

    mmseg semantics (``mmcv.rescale_size``): ``scale = (long_edge, short_edge)``; the
    factor is ``min(long / max(h, w), short / min(h, w))`` and the new size is
    ``round(h * f), round(w * f)``. Image bilinear, label nearest.
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(scale, tf.float32)
    long_edge, short_edge = tf.reduce_max(scale), tf.reduce_min(scale)
    factor = tf.minimum(long_edge / tf.reduce_max(shape), short_edge / tf.reduce_min(shape))
    new_size = tf.cast(tf.floor(shape * factor + 0.5), tf.int32)
    return resize(image, label, tf.maximum(new_size, 1))


def random_rescale(image, label, seed, ratio_range=(0.5, 2.0), scale=None):
    """mmseg ``RandomResize``: rescale by a random ratio in ``ratio_range``.

    With ``scale=(long, short)`` the target is ``scale * ratio`` applied with
    :func:`rescale_keep_ratio` (mmseg's recipe, e.g. ``(2048, 512)`` for ADE20K);
    with ``scale=None`` the image's own size is multiplied by the ratio.
    """
    lo, hi = float(ratio_range[0]), float(ratio_range[1])
    ratio = tf.random.stateless_uniform([], seed, minval=lo, maxval=hi) if hi > lo else tf.constant(lo)
    if scale is not None:
        return rescale_keep_ratio(image, label, tf.cast(scale, tf.float32) * ratio)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    new_size = tf.maximum(tf.cast(tf.floor(shape * ratio + 0.5), tf.int32), 1)
    return resize(image, label, new_size)


def pad_to_size(image, label, size, ignore_label=IGNORE_LABEL):
    """Pad bottom/right to at least ``size = (height, width)``: image 0, label 255.

    Dimensions already larger than ``size`` are left as they are.
    """
    image = _as_float_image(image)
    label = _as_int_label(label)
    shape = tf.shape(image)[:2]
    pad_h = tf.maximum(size[0] - shape[0], 0)
    pad_w = tf.maximum(size[1] - shape[1], 0)
    image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]], constant_values=0.0)
    label = tf.pad(label, [[0, pad_h], [0, pad_w]], constant_values=ignore_label)
    return image, label


def random_crop(image, label, seed, crop_size, cat_max_ratio=1.0, ignore_label=IGNORE_LABEL,
                max_tries=10):
    """Random ``crop_size = (height, width)`` crop; pads first (image 0, label 255).

    ``cat_max_ratio < 1`` reproduces mmseg ``RandomCrop(cat_max_ratio=...)``: up to
    ``max_tries`` crops are drawn until one has more than one non-ignored class and its
    most frequent class covers less than ``cat_max_ratio`` of the non-ignored pixels (the
    last try is used otherwise). Output shapes are static.
    """
    ch, cw = int(crop_size[0]), int(crop_size[1])
    image, label = pad_to_size(image, label, (ch, cw), ignore_label)
    shape = tf.shape(image)[:2]
    max_y, max_x = shape[0] - ch, shape[1] - cw

    def offsets(s):
        sy, sx = _split(s, 2)
        y = tf.random.stateless_uniform([], sy, minval=0, maxval=max_y + 1, dtype=tf.int32)
        x = tf.random.stateless_uniform([], sx, minval=0, maxval=max_x + 1, dtype=tf.int32)
        return y, x

    seeds = tf.random.experimental.stateless_split(seed, num=max_tries)
    if cat_max_ratio >= 1.0:
        y, x = offsets(seeds[0])
    else:
        def crop_ok(y, x):
            crop = label[y:y + ch, x:x + cw]
            values = tf.boolean_mask(crop, tf.not_equal(crop, ignore_label))
            counts = tf.math.bincount(values, minlength=1)
            num_present = tf.reduce_sum(tf.cast(counts > 0, tf.int32))
            total = tf.maximum(tf.reduce_sum(counts), 1)
            ratio = tf.cast(tf.reduce_max(counts), tf.float32) / tf.cast(total, tf.float32)
            return tf.logical_and(num_present > 1, ratio < cat_max_ratio)

        def cond(i, y, x, done):
            return tf.logical_and(i < max_tries, tf.logical_not(done))

        def body(i, y, x, done):
            y, x = offsets(seeds[i])
            return i + 1, y, x, crop_ok(y, x)

        _, y, x, _ = tf.while_loop(
            cond, body, (tf.constant(0), tf.constant(0), tf.constant(0), tf.constant(False))
        )
    image = tf.ensure_shape(image[y:y + ch, x:x + cw], (ch, cw, 3))
    label = tf.ensure_shape(label[y:y + ch, x:x + cw], (ch, cw))
    return image, label


def random_flip(image, label, seed, prob=0.5):
    """Flip image and label left-right together with probability ``prob``."""
    image = _as_float_image(image)
    label = _as_int_label(label)
    flip = tf.random.stateless_uniform([], seed) < prob
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
    return image, label


def photometric_distortion(image, seed, brightness_delta=32, contrast_range=(0.5, 1.5),
                           saturation_range=(0.5, 1.5), hue_delta=18):
    """mmseg ``PhotoMetricDistortion`` on an RGB image in [0, 255] (float32 out).

    Each step happens with probability 0.5, in mmseg's order: brightness (add a uniform
    ``[-delta, delta]``), contrast (multiply by ``alpha``; mmseg scales, it does not
    centre on the mean) either first or last (random mode), saturation (HSV ``s *=
    alpha``), hue (shift by an integer ``[-hue_delta, hue_delta]`` in OpenCV's 0..180 hue
    units). Values are clipped to [0, 255] after each step.
    """
    image = _as_float_image(image)
    s = _split(seed, 9)

    def coin(k):
        return tf.random.stateless_uniform([], s[k]) < 0.5

    delta = tf.random.stateless_uniform([], s[1], -float(brightness_delta), float(brightness_delta))
    image = tf.where(coin(0), tf.clip_by_value(image + delta, 0.0, 255.0), image)

    alpha_c = tf.random.stateless_uniform([], s[3], contrast_range[0], contrast_range[1])
    do_contrast = coin(2)
    contrast_first = tf.random.stateless_uniform([], s[4]) < 0.5

    def contrast(img, when):
        apply = tf.logical_and(do_contrast, when)
        return tf.where(apply, tf.clip_by_value(img * alpha_c, 0.0, 255.0), img)

    image = contrast(image, contrast_first)
    alpha_s = tf.random.stateless_uniform([], s[6], saturation_range[0], saturation_range[1])
    alpha_s = tf.where(coin(5), alpha_s, 1.0)
    hue = tf.random.stateless_uniform([], s[8], -hue_delta, hue_delta + 1, dtype=tf.int32)
    hue = tf.where(coin(7), tf.cast(hue, tf.float32) / 180.0, 0.0)
    hsv = tf.image.rgb_to_hsv(image / 255.0)
    h = tf.math.floormod(hsv[..., 0] + hue, 1.0)
    sat = tf.clip_by_value(hsv[..., 1] * alpha_s, 0.0, 1.0)
    image = tf.clip_by_value(tf.image.hsv_to_rgb(tf.stack([h, sat, hsv[..., 2]], -1)) * 255.0, 0.0, 255.0)
    image = contrast(image, tf.logical_not(contrast_first))
    return image


def train_augment(image, label, seed, crop_size, scale=None, ratio_range=(0.5, 2.0),
                  cat_max_ratio=1.0, flip_prob=0.5, photometric=True,
                  ignore_label=IGNORE_LABEL):
    """The mmseg training recipe: random rescale -> random crop (pad 0/255) -> flip ->
    photometric distortion. Returns float32 ``(ch, cw, 3)`` and int32 ``(ch, cw)``.
    """
    s = _split(seed, 4)
    image, label = random_rescale(image, label, s[0], ratio_range=ratio_range, scale=scale)
    image, label = random_crop(image, label, s[1], crop_size, cat_max_ratio=cat_max_ratio,
                               ignore_label=ignore_label)
    if flip_prob > 0:
        image, label = random_flip(image, label, s[2], prob=flip_prob)
    if photometric:
        image = photometric_distortion(image, s[3])
    return image, label

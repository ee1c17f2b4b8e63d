"""Regenerate ``docs/images/danet_attention.png`` (shown in the README).

    KERAS_BACKEND=tensorflow python docs/images/make_danet_attention.py [OUTPUT.png]

A DANet on the tiny backbone (untrained, seed 0: the maps show the mechanism, not a
trained model's semantics) on one image of the built-in synthetic dataset: the position
attention of the marked pixel and the channel attention matrix.
"""

import os
import sys

import numpy as np


def make_picture(output, seed=0, size=96, pixel=(30, 60)):
    import keras

    from keras_segattn import models
    from keras_segattn.data import make_synthetic_example
    from keras_segattn.visualize import plot_attention

    keras.utils.set_random_seed(seed)
    model = models.get("danet", num_classes=5, backbone="resnet_tiny")
    example = make_synthetic_example(np.random.default_rng(seed), size=size)
    image = example[0] if isinstance(example, (tuple, list)) else example["image"]
    fig = plot_attention(model, np.asarray(image), pixel=pixel, output=output, dpi=80)
    return fig


if __name__ == "__main__":
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "danet_attention.png")
    make_picture(sys.argv[1] if len(sys.argv) > 1 else default)

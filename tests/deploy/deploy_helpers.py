"""Tiny models for the deployment tests."""

import keras
import numpy as np

from keras_segattn.layers import ChannelAttention, CrissCrossAttention, PositionAttention, Resize

BACKEND = keras.backend.backend()


def hand_model(num_classes=3, seed=0):
    """Tiny functional model: strided convs, position attention, bilinear Resize."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, 3), name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    logits = keras.layers.Conv2D(num_classes, 1)(x)
    logits = Resize(name="logits")(logits, inp)
    return keras.Model(inp, {"logits": logits, "aux": logits})


def attention_model(num_classes=3, seed=0):
    """Position, channel and recurrent criss-cross attention on one small feature map."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, 3), name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(16, 3, strides=4, padding="same", activation="relu")(x)
    cca = CrissCrossAttention(reduction=4, name="cca")
    pam = PositionAttention(reduction=4, name="pam")(x)
    cam = ChannelAttention(name="cam")(x)
    rcca = cca(cca(x))
    logits = keras.layers.Conv2D(num_classes, 1)(keras.layers.Add()([pam, cam, rcca]))
    return keras.Model(inp, {"logits": Resize(name="logits")(logits, inp)})


def real_model(name="danet", num_classes=5):
    """A library model on the tiny backbone, or ``None`` when not available yet."""
    try:
        from keras_segattn import models

        keras.utils.set_random_seed(0)
        return models.get(name, num_classes=num_classes, backbone="resnet_tiny")
    except (ImportError, ValueError, AttributeError):
        return None



"""Ctrl-C during ``fit``: ``InterruptAtStepEnd`` turns SIGINT into a ``KeyboardInterrupt`` at
the end of the current step (never inside backend code), and a second Ctrl-C stops at once."""

import os
import signal

import keras
import numpy as np
import pytest

from keras_segattn.training.callbacks import InterruptAtStepEnd


class SendSigint(keras.callbacks.Callback):
    """Sends SIGINT to this process at the end of the given batches (before the callbacks
    after it in the list run)."""

    def __init__(self, batches):
        super().__init__()
        self.batches, self.seen = set(batches), []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append(batch)
        if batch in self.batches:
            os.kill(os.getpid(), signal.SIGINT)


def tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def data():
    return np.ones((16, 3), "float32"), np.ones((16, 1), "float32")


@pytest.fixture(autouse=True)
def interactive_sigint():
    """Python's own SIGINT handler, as in a terminal; a test runner started as a background
    job inherits SIGINT ignored. Restored afterwards."""
    original = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, original)


def test_sigint_stops_at_the_end_of_the_step(capfd):
    model, (x, y) = tiny_model(), data()
    sender, interrupt = SendSigint({1}), InterruptAtStepEnd()
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=2, epochs=1, callbacks=[sender, interrupt], verbose=0)
    assert sender.seen == [0, 1]  # step 1 ended (all its callbacks ran), step 2 never started
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2
    assert signal.getsignal(signal.SIGINT) is handler  # the previous handler is back
    assert capfd.readouterr().err.strip().splitlines()[-1] == (  # (after TF's start-up log)
        "Interrupted: stopping at the end of this step (Ctrl-C again to stop now).")


def test_second_sigint_raises_at_once():
    interrupt = InterruptAtStepEnd()
    interrupt.on_train_begin()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # recorded, not raised
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            signal.getsignal(signal.SIGINT)  # any bytecode after the signal runs the handler
    finally:
        interrupt.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ignored_sigint_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job's disposition
    interrupt = InterruptAtStepEnd()
    interrupt.on_train_begin()
    try:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # ignored: nothing recorded, nothing raised
        interrupt.on_train_batch_end(0)
    finally:
        interrupt.on_train_end()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN

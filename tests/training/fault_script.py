"""Run by test_faults.py in a subprocess: ``keras-segattn train`` on the built-in
``32px_tiny`` dataset (FCN on ``resnet_tiny``, 5 steps in intervals of 2, 2, 1), optionally
with a fault injected at a precise point:

* ``kill-in-checkpoint-write:N``: SIGKILL while ``checkpoints/ckpt-N.keras`` is being
  written (its temporary file complete, not yet renamed);
* ``kill-after-commit:N``: SIGKILL right after ``state.json`` of step N is written (before
  ``history.csv`` and the TensorBoard logs are updated);
* ``sigint-at-step:N``: a real SIGINT to this process after step N.

Usage: ``fault_script.py FAULT OUTPUT_DIR DATA_DIR`` (FAULT ``none`` for a plain run).
Exits as the ``keras-segattn`` program does (``cli.console_main``).
"""

import os
import signal
import sys

ARGS = ["train", "--model", "fcn", "--backbone", "resnet_tiny", "--dataset", "synthetic",
        "--dataset-config", "32px_tiny", "--crop-size", "32", "--batch-size", "4",
        "--steps", "5", "--eval-every", "2", "--lr", "0.02", "--distribution", "none"]


def inject(fault):
    from keras_segattn.training import callbacks, run_dir

    if fault == "none":
        return
    kind, step = fault.split(":")
    step = int(step)
    if kind == "kill-in-checkpoint-write":
        atomic_write = run_dir.atomic_write

        def write_then_die(path, write):
            if not path.endswith(f"ckpt-{step:07d}.keras"):
                return atomic_write(path, write)

            def die_after(tmp):
                write(tmp)
                os.kill(os.getpid(), signal.SIGKILL)

            return atomic_write(path, die_after)

        run_dir.atomic_write = write_then_die
    elif kind == "kill-after-commit":
        write_state = run_dir.RunDirectory.write_state

        def commit_then_die(self, state):
            write_state(self, state)
            if state["step"] == step and not state.get("finished"):
                os.kill(os.getpid(), signal.SIGKILL)

        run_dir.RunDirectory.write_state = commit_then_die
    elif kind == "sigint-at-step":
        batch_end = callbacks.RunProgress.on_train_batch_end

        def interrupt(self, batch, logs=None):
            batch_end(self, batch, logs)
            if self._epoch * self.interval + batch + 1 == step:
                os.kill(os.getpid(), signal.SIGINT)

        callbacks.RunProgress.on_train_batch_end = interrupt
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    fault, output_dir, data_dir = sys.argv[1:4]
    sys.argv[0] = "keras-segattn"  # start as the console script does (lazy package import)
    from keras_segattn import cli

    cli.quiet_startup()  # what `keras-segattn` does before anything imports TensorFlow
    inject(fault)
    cli.console_main(ARGS + ["--output-dir", output_dir, "--data-dir", data_dir])

"""The ``keras-segattn`` command line: train, evaluate, export, predict and visualize.

Each sub-command lives in its own module with ``add_arguments(parser)`` and ``run(args)``
(optionally ``interrupted(args)``: the line printed on Ctrl-C). Nothing heavy is imported
before the arguments are parsed (``keras_segattn/__init__.py`` skips its eager imports while
the command starts), so ``--help`` and argument errors answer at once, and the logging of
TensorFlow, JAX and tensorflow-datasets is set up (quiet unless ``--verbose``) before those
libraries load.

Every failure is one line on stderr, ``keras-segattn <command>: error: <message>``, and a
non-zero exit code: 2 for bad arguments or input, 1 for a failure while running (a full
disk, a diverged loss, an unexpected error; ``--verbose`` adds the traceback), 130 after
Ctrl-C and 143 after SIGTERM (the command says what was saved and how to continue).
"""

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading

COMMANDS = {
    "train": "Train a model (with no dataset given: the built-in dataset, a few CPU minutes).",
    "evaluate": "Evaluate a saved model: mIoU, mAcc, aAcc and per-class IoU.",
    "export": "Export a model to SavedModel, TFLite or ONNX.",
    "predict": "Segment images, folders or globs; write class maps, colour masks, overlays.",
    "visualize": "Plot what the attention looks at for one image.",
}
DESCRIPTION = ("Attention-based semantic segmentation for Keras 3: train, evaluate, export, "
               "predict and visualize.")
# Exit codes.
BAD_INPUT, FAILED, INTERRUPTED, TERMINATED = 2, 1, 130, 143


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping the job), handled like Ctrl-C."""


def _command_module(name):
    return importlib.import_module(f"keras_segattn.cli.{name}")


def build_parser(command=None):
    parser = _Parser(prog="keras-segattn", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=_Parser)
    for name, help_text in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _command_module(name).add_arguments(sub)
            sub.add_argument("--verbose", action="store_true",
                             help="show the logs of TensorFlow, JAX and tensorflow-datasets, "
                                  "and tracebacks of errors")
    return parser


def quiet_startup():
    """Load TensorFlow without its C++ start-up block.

    TensorFlow 2.18+ logs oneDNN, CUDA probing ("failed call to cuInit" on a CPU machine),
    CPU features, ... through absl before absl's logging is initialised, where
    ``TF_CPP_MIN_LOG_LEVEL`` does not reach, once per copy of absl it loads (so twice).
    TensorFlow is imported (and its devices listed, which is when CUDA is probed) with the
    process's C-level stderr sent to a temporary file; what was written there is shown
    again if that fails. ``TF_CPP_MIN_LOG_LEVEL=2`` (unless set) keeps later C++ info and
    warnings off."""
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def quiet_libraries():
    """Python-side logs of TensorFlow, absl, JAX and tensorflow-datasets, and the warnings
    of those libraries and Keras: errors only, restored afterwards (``main`` may be called
    from a program)."""
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in
               ("tensorflow", "absl", "jax", "jax._src.xla_bridge", "tensorflow_datasets")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        for module in ("keras", "jax", "tensorflow", "tensorflow_datasets", "tf_keras", "torch"):
            warnings.filterwarnings("ignore", module=module)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def one_line(error):
    """The first line of an exception's message (``OSError``: its ``strerror``)."""
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        text = error.strerror + (f": {error.filename!r}" if error.filename else "")
    else:
        text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not verbose:
        quiet_startup()
    with contextlib.nullcontext() if verbose else quiet_libraries():
        return _run(args, verbose)


def _run(args, verbose):
    module = _command_module(args.command)
    prefix = f"keras-segattn {args.command}"

    def terminate(signum, frame):
        raise Terminated()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return module.run(args) or 0
    except KeyboardInterrupt as interrupt:
        message = getattr(module, "interrupted", lambda a: "interrupted.")(args)
        print(f"\n{prefix}: {message}", file=sys.stderr, flush=True)
        return TERMINATED if isinstance(interrupt, Terminated) else INTERRUPTED
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as error:
        if verbose:
            import traceback

            traceback.print_exc()
        print(f"{prefix}: error: {one_line(error)}", file=sys.stderr, flush=True)
        return BAD_INPUT
    except Exception as error:  # noqa: BLE001 - the command line reports every failure in one line
        if verbose:
            import traceback

            traceback.print_exc()
        expected = isinstance(error, (OSError, RuntimeError))  # a full disk, a diverged loss
        kind = "" if expected else f"{type(error).__name__}: "
        hint = "" if verbose or expected else " (--verbose shows the traceback)"
        print(f"{prefix}: error: {kind}{one_line(error)}{hint}", file=sys.stderr, flush=True)
        return FAILED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def console_main(argv=None):
    """The ``keras-segattn`` program: :func:`main`, then exit. After Ctrl-C or SIGTERM the
    process ends at once (``os._exit``) once its message is out: everything the run saved is
    already complete on disk, and an interrupted JAX/XLA or TensorFlow computation can crash
    the interpreter's shutdown (a segmentation fault instead of exit code 130)."""
    code = main(argv)
    if code in (INTERRUPTED, TERMINATED):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()

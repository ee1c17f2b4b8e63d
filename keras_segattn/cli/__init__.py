"""The ``keras-segattn`` command line: ``train``, ``evaluate``, ``export``, ``predict``,
``visualize``.

Each sub-command lives in its own module with ``add_arguments(parser)`` and ``run(args)``;
a module is imported only when its sub-command runs, so ``keras-segattn --help`` is fast.
"""

import argparse
import importlib
import sys

COMMANDS = {
    "train": "Train a model (with no dataset given: the built-in dataset, a few CPU minutes).",
    "evaluate": "Evaluate a saved model: mIoU, mAcc, aAcc and per-class IoU.",
    "export": "Export a model to SavedModel, TFLite or ONNX.",
    "predict": "Segment images, folders or globs; write class maps, colour masks, overlays.",
    "visualize": "Plot what the attention looks at for one image.",
}


def _command_module(name):
    return importlib.import_module(f"keras_segattn.cli.{name}")


def build_parser(command=None):
    parser = argparse.ArgumentParser(prog="keras-segattn", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _command_module(name).add_arguments(sub)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    return _command_module(args.command).run(args) or 0


if __name__ == "__main__":
    sys.exit(main())

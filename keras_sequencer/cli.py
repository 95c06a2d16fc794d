"""``keras-sequencer`` command line: one sub-command per task.

Each sub-command lives in the module that owns the concept and exposes
``add_parser(subparsers)``, which registers it and sets ``func`` (called with
the parsed ``args``; its return value is the exit code). Register new ones in
``COMMAND_MODULES``.
"""

import argparse
import importlib
import sys

# module path -> its add_parser adds one or more sub-commands.
COMMAND_MODULES = [
    "conversion",
    "imagenet",
    "validation",
]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-sequencer",
        description="Sequencer2D (Deep LSTM for Image Classification) for Keras 3.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"keras_sequencer.{module_name}").add_parser(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())

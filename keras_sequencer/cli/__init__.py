"""``keras-sequencer`` command line: one sub-command per task.

Each sub-command is a module of this package exposing ``add_parser(subparsers)``,
which registers it and sets ``func`` (called with the parsed ``args``; its
return value is the exit code). Each is a thin call into the library. Register
new ones in :data:`COMMAND_MODULES`.

Errors: a :class:`~keras_sequencer.cli.common.CLIError`, ``ValueError``,
``OSError`` or ``ImportError`` raised by a sub-command is printed as one line,
``keras-sequencer <command>: error: <message>``, and the exit status is 1
(argparse's usage errors, with the sub-command's usage, exit with 2, before
Keras is imported). ``--debug`` (before or after the
sub-command) shows the traceback instead.
"""

import argparse
import importlib
import sys

from keras_sequencer.cli.common import CLIError, one_line, report

# keras_sequencer.cli.<name> modules; each add_parser adds one sub-command.
COMMAND_MODULES = ["predict", "validate", "convert", "train", "export", "preset"]
# Exceptions shown as one line (anything else is a bug: traceback).
USER_ERRORS = (CLIError, ValueError, OSError, ImportError)

__all__ = ["CLIError", "COMMAND_MODULES", "build_parser", "main"]


def _add_debug(parser, default):
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the full traceback of an error",
    )


def build_parser():
    """The ``keras-sequencer`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="keras-sequencer",
        description="Sequencer2D (Deep LSTM for Image Classification) for Keras 3.",
    )
    _add_debug(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"keras_sequencer.cli.{module_name}").add_parser(subparsers)
    for subparser in subparsers.choices.values():
        # also accepted after the sub-command; SUPPRESS keeps a global --debug
        _add_debug(subparser, default=argparse.SUPPRESS)
    parser.command_parsers = subparsers.choices  # sub-command name -> its parser
    return parser


def main(argv=None):
    """Runs ``keras-sequencer`` with ``argv`` (default: ``sys.argv[1:]``); returns
    the exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the sub-command's own usage, not the top-level one
        parser.command_parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        import keras_sequencer

        keras_sequencer.load()  # Keras, once the arguments are known to be good
        return args.func(args) or 0
    except USER_ERRORS as error:
        if args.debug:
            raise
        report(args.command, one_line(error))
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        report(args.command, "interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

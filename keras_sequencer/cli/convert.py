"""``keras-sequencer convert CHECKPOINT OUTPUT``: a timm / okojoalg PyTorch
checkpoint to a Keras ``.weights.h5`` file
(:func:`keras_sequencer.registry.convert_checkpoint`).

The checkpoint path, the output name and ``--model`` are checked before
anything is read or built.
"""

from keras_sequencer.cli.common import CLIError, check_model, require_file

COMMAND = "convert"


def add_parser(subparsers):
    parser = subparsers.add_parser(
        COMMAND,
        help="convert a timm/okojoalg PyTorch checkpoint to a Keras .weights.h5",
        description="Convert a Sequencer2D checkpoint (.safetensors, or .pth/.bin with torch) "
        "in timm or okojoalg/sequencer layout to a Keras .weights.h5 file.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="input .safetensors/.pth/.pt/.bin file")
    parser.add_argument("output", metavar="OUTPUT", help="output file, ending in .weights.h5")
    parser.add_argument(
        "--model",
        default=None,
        help="a registered model name, checked against the checkpoint; "
        "default: read the architecture off the checkpoint",
    )
    parser.set_defaults(func=run)


def run(args):
    """Checks the arguments, converts, prints what was written; returns the exit code."""
    from keras_sequencer.conversion import CHECKPOINT_SUFFIXES
    from keras_sequencer.registry import convert_checkpoint

    require_file(args.checkpoint)
    if not str(args.checkpoint).lower().endswith(CHECKPOINT_SUFFIXES):
        raise CLIError(f"{args.checkpoint}: expected a {', '.join(CHECKPOINT_SUFFIXES)} checkpoint")
    if not str(args.output).endswith(".weights.h5"):
        raise CLIError(f"OUTPUT {args.output}: must end in .weights.h5")
    if args.model is not None:
        check_model(args.model)
    model = convert_checkpoint(args.checkpoint, args.output, model_name=args.model)
    print(f"wrote {args.output} ({model.count_params():,} parameters)")
    return 0

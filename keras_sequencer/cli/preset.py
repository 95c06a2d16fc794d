"""``keras-sequencer preset NAME --output DIR``: writes a KerasHub preset folder
(``keras_sequencer.hub.save_imagenet_preset``) of a model with published
ImageNet weights, model card (``README.md``) included, ready for
``keras_hub.upload_preset``.

keras-hub (the ``[hub]`` extra), the name and the output folder are checked
before any model is built.
"""

import os

from keras_sequencer import optional
from keras_sequencer.cli.common import CLIError

COMMAND = "preset"
SUFFIX = "_imagenet"


def preset_names():
    from keras_sequencer.variants import list_models

    return [f"{name}{SUFFIX}" for name in list_models(pretrained=True)]


def add_parser(subparsers):
    parser = subparsers.add_parser(
        COMMAND,
        help="write a KerasHub preset folder (ImageNet weights, model card) for keras_hub.upload_preset",
        description="Write the KerasHub preset NAME (a Sequencer2DImageClassifier with the ImageNet "
        "weights, its preprocessor and a model card naming the weights' origin and license) to a "
        "folder, ready for keras_hub.upload_preset('hf://...' or 'kaggle://...', DIR). Needs the "
        "[hub] extra.",
    )
    parser.add_argument(
        "name",
        metavar="NAME",
        help="sequencer2d_s_imagenet, sequencer2d_m_imagenet or sequencer2d_l_imagenet",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="the folder to write (new or empty)")
    parser.set_defaults(func=run)


def run(args):
    """Checks the arguments, writes the preset, prints what was written; returns the exit code."""
    optional.require_installed(("keras_hub",))
    names = preset_names()
    if args.name not in names:
        raise CLIError(f"unknown preset {args.name!r}; choose one of: {', '.join(names)}")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise CLIError(f"--output {args.output}: is a file, expected a folder")
    if os.path.isdir(args.output) and os.listdir(args.output):
        raise CLIError(f"--output {args.output}: is not empty; give a new or empty folder")
    from keras_sequencer import hub

    hub.save_imagenet_preset(args.name, args.output)
    files = sorted(os.listdir(args.output))
    size = sum(os.path.getsize(os.path.join(args.output, f)) for f in files)
    print(f"wrote {args.output} ({', '.join(files)}; {size / 1e6:.1f} MB)")
    print(f"upload it with: keras_hub.upload_preset('hf://USER/{args.name}', {args.output!r})")
    return 0

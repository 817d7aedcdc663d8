"""Train an AdaptIR task adapter on a pretrained scale-1 restorer.

One process (CPU or GPU):
    python examples/train_adaptir.py --task denoise-50 --output runs/denoise-50
Several GPUs (or several CPU processes over gloo: `accelerate launch --multi_gpu --num_processes 2 ...`):
    accelerate launch --num_processes 2 examples/train_adaptir.py --task derain-heavy --output runs/derain-heavy

The defaults train on the colour photos bundled with scikit-image (offline) with the embedded default base model;
pass --base <model id or folder> and --data <folder or Hub dataset> for your own. A killed run resumes from its newest
checkpoint when started again with the same command. Run with --help for every option.
"""

import argparse
import sys

from peft_adaptir.cli.output import cli_output
from peft_adaptir.cli.train import add_train_arguments, run_train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    parser.set_defaults(task="denoise-50", steps=2000, batch_size=8, patch_size=64, val_every=250)
    args = parser.parse_args()
    with cli_output(getattr(args, "verbose", 0)):  # quiet unless -v / -vv
        return run_train(args)


if __name__ == "__main__":
    sys.exit(main())

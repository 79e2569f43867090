"""``python -m deforhmr_model.train ACTION ...`` = ``deforhmr train ACTION ...`` (for ``torchrun -m``)."""
import argparse
import sys

from deforhmr_model.train.cli import add_train_parser


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="deforhmr-train")
    sub = parser.add_subparsers()
    add_train_parser(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The ``nprnn`` command line."""

import argparse
import sys


def cmd_demo(args):
    from nprnn.demo import run_demo

    losses = run_demo(delay=args.delay, epochs=args.epochs, hidden=args.hidden, seed=args.seed)
    print(f"loss went from {losses[0]:.5f} to {losses[-1]:.5f}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="nprnn", description="Recurrent neural networks in NumPy.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train a TimeRNN on a generated echo task and show the loss going down")
    demo.add_argument("--delay", type=int, default=2, help="how many steps back the network must echo (default 2)")
    demo.add_argument("--epochs", type=int, default=30, help="passes over the 1024 generated sequences (default 30)")
    demo.add_argument("--hidden", type=int, default=32, help="hidden size H of the TimeRNN (default 32)")
    demo.add_argument("--seed", type=int, default=0, help="seed for data, initial weights and shuffling (default 0)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("nprnn: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:
        print(f"nprnn: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

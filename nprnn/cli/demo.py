"""``nprnn demo``: a TimeRNN learns to echo its input, with NumPy alone (parsing and printing only)."""

from nprnn.cli.args import count, positive


def cmd_demo(args):
    from nprnn.training.demo import run_demo

    losses = run_demo(delay=args.delay, epochs=args.epochs, hidden=args.hidden, seed=args.seed)
    print(f"loss went from {losses[0]:.5f} to {losses[-1]:.5f}")
    return 0


def add_commands(sub):
    d = sub.add_parser("demo", help="train a TimeRNN on a generated echo task and show the loss going down")
    d.add_argument("--delay", type=count, default=2, help="how many steps back the network must echo (default 2)")
    d.add_argument("--epochs", type=positive, default=30, help="passes over the 1024 generated sequences (default 30)")
    d.add_argument("--hidden", type=positive, default=32, help="hidden size H of the TimeRNN (default 32)")
    d.add_argument("--seed", type=count, default=0, help="seed for data, initial weights and shuffling (default 0)")
    d.set_defaults(func=cmd_demo)

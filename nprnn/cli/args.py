"""What every command's parser shares: the argument types that refuse bad numbers at parse time, and a
parser whose errors are one line."""

import argparse
import difflib
import math
import sys


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (with "did you mean" for a typo), exit 2."""

    def error(self, message):
        hint = ""
        if "invalid choice:" in message:
            typed = message.split("invalid choice:")[1].split("'")[1]
            choices = message.split("(choose from")[-1].replace("'", "").replace(")", "").replace(",", " ").split()
            close = difflib.get_close_matches(typed, choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        elif message.startswith("unrecognized arguments:"):
            options = _options(self, sys.argv[1:])
            typed = message.split(":", 1)[1].split()[0].split("=")[0]
            close = difflib.get_close_matches(typed, options, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
        print(f"{self.prog}: error: {message}{hint} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _options(parser, argv):
    """The option strings of ``parser`` and of the subcommands named in ``argv`` (where a typo'd option
    belongs: argparse reports it from the top-level parser)."""
    options = [o for action in parser._actions for o in action.option_strings]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name in argv:
                if name in action.choices:
                    options += _options(action.choices[name], argv)
                    break
    return [o for o in options if o not in ("-h", "--help")] or ["--help"]


def _integer(text, low, what):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def positive(text):
    """An integer >= 1."""
    return _integer(text, 1, "a positive integer")


def count(text):
    """An integer >= 0 (where 0 means "off" or "none", as each option's help says)."""
    return _integer(text, 0, "an integer >= 0")


def _real(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_real(text):
    value = _real(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def nonnegative_real(text):
    value = _real(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def factor(text):
    """A number in (0, 1): what ``--decay`` multiplies the learning rate by."""
    value = _real(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"must be in (0, 1): the lr is multiplied by it (the textbook's divide-by-4 is 0.25), got {text}"
        )
    return value


def probability(text):
    """A number in [0, 1)."""
    value = _real(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value

"""The ``nprnn`` command line: train, eval, generate, import-book, export, demo, seq2seq.

Parsing and printing only; each command imports the code it runs when it runs, so ``nprnn --help``
and the commands that read a model load no training code. Errors a user can cause (bad files, bad
options, numeric blow-ups, an output folder in use) end as one line on stderr with exit code 2;
Ctrl-C during training saves a resumable checkpoint and exits with 130.
"""

import sys

from nprnn import __version__
from nprnn.cli import demo, lm, seq2seq
from nprnn.cli.args import Parser


def build_parser():
    parser = Parser(prog="nprnn", description="Recurrent neural networks in NumPy.")
    parser.add_argument("--version", action="version", version=f"nprnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    lm.add_commands(sub)
    demo.add_commands(sub)
    seq2seq.add_commands(sub)
    return parser


def _os_message(e):
    """``<file>: <reason>`` for an OSError that names its file, else its own text."""
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. piped into head: the reader has what it wanted
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as e:
        print(f"nprnn: {e or 'interrupted'}", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"nprnn: error: {_os_message(e)}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as e:
        print(f"nprnn: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

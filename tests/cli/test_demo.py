"""nprnn demo: the echo task on the command line."""

import pytest

from nprnn.cli import main


def test_demo_loss_goes_down(capsys):
    assert main(["demo", "--epochs", "10"]) == 0
    out = capsys.readouterr().out
    start, end = (float(x) for x in out.splitlines()[-1].split("from ")[1].split(" to "))
    assert end < 0.1 * start


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--delay", "-3"], ["--hidden", "0"], ["--epochs", "x"]])
def test_bad_counts_are_one_line_exit_2(capsys, args):
    with pytest.raises(SystemExit) as stop:
        main(["demo", *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and args[0] in err


def test_delay_must_fit_the_sequence():
    from nprnn.training.demo import run_demo

    with pytest.raises(ValueError, match=r"delay must be an integer in \[0, T=20\), got 20"):
        run_demo(delay=20, epochs=1)

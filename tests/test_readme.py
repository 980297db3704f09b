"""The README's promises: its example runs as written, and CI runs its test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_python_examples_run(capsys, tmp_path, monkeypatch, shared_dir):
    """Every python block, as written, from a folder with ../shared beside it (as the repository has)."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 3, "README has its TimeRNN and From Python examples"
    work = tmp_path / "repo"
    work.mkdir()
    (tmp_path / "shared").symlink_to(shared_dir)
    monkeypatch.chdir(work)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "(2, 5, 4) (2, 5, 3)" in out
    assert re.search(r"test perplexity \d+\.\d+", out) and "test exact match" in out
    assert (work / "lm.npz").is_file() and (work / "dates.npz").is_file()
    assert (work / "runs" / "from-python" / "perplexity.png").is_file()


def test_ci_runs_the_readme_test_command():
    commands = [
        line
        for line in re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(commands) == 2, "the README starts with exactly two commands"
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()

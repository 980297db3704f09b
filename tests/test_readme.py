"""The README's promises: its example runs as written, and CI runs its test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_python_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert "(2, 5, 4) (2, 5, 3)" in capsys.readouterr().out


def test_ci_runs_the_readme_test_command():
    commands = [
        line
        for line in re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(commands) == 2, "the README starts with exactly two commands"
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()

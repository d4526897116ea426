"""The README's library example runs as written, and its two set-up commands name scripts that exist."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_example_runs(capsys):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "newton" in out and "converged" in out and "uniform_direction" in out


def test_readme_network_example_runs(capsys):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Training networks"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["AdaGradBMA", "UniformDirection"]
    for line in out:                       # the training loss went down with both optimizers
        first, last = float(line.split()[2]), float(line.split()[4])
        assert last < 0.9 * first, line


def test_readme_opens_with_the_two_commands_and_ci_calls_the_test_command():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert [line.split("#")[0].strip() for line in first_block] == ["bash scripts/main.sh", "bash scripts/test.sh"]
    for line in first_block:
        assert (ROOT / line.split()[1]).is_file()
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()

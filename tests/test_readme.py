import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^python3 -m venv .*$", readme, flags=re.M)
    assert len(commands) == 2, "the README keeps exactly two set-up commands"
    test_cmd = next(c for c in commands if "pytest" in c)
    install, pytest_part = test_cmd.split("pip install ", 1)[1].split(" && ", 1)
    assert f"pip install {install}" in ci
    assert pytest_part.split(" ")[:3] == ["python", "-m", "pytest"]
    assert "python -m pytest" in ci


def test_pyproject_maps_every_design_folder_into_the_package():
    text = (ROOT / "pyproject.toml").read_text()
    for folder in ("models", "quantization", "export", "runtime", "training"):
        assert f'"melody_edge.{folder}" = "{folder}"' in text
        assert (ROOT / folder / "__init__.py").is_file()

"""The README's set-up commands are what CI runs."""

import re

from tests.conftest import ROOT


def _commands():
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", readme)


def test_ci_runs_the_readme_test_command_after_installing_torch_first():
    main_job, test_cmd = _commands()[:2]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci, "CI must run the README's test command verbatim"
    torch_first = ci.index("pip install torch==2.13.0")
    assert torch_first < ci.index(test_cmd)
    assert "pytest" in test_cmd and ".[test]" in test_cmd


def test_main_job_installs_and_runs_a_shipped_graph():
    main_job = _commands()[0]
    assert main_job.startswith("pip install torch==2.13.0 && pip install -e . && nodetrainer run graphs/")
    graph = main_job.rsplit(" ", 1)[-1]
    assert (ROOT / graph).exists()

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


def test_ci_installs_the_tested_versions_and_they_satisfy_the_project_ranges():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    ci = (ROOT / ".ci" / "run").read_text()
    assert 'PIP_CONSTRAINT="$PWD/constraints.txt"' in ci
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pinned[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    missing = [str(r) for r in wanted if canonicalize_name(r.name) not in pinned]
    outside = [f"{r.name}=={pinned[canonicalize_name(r.name)]} (wants {r.specifier})" for r in wanted
               if canonicalize_name(r.name) in pinned
               and not r.specifier.contains(pinned[canonicalize_name(r.name)], prereleases=True)]
    assert not missing and not outside, (missing, outside)
    assert pinned["torch"] == "2.13.0", "CI installs the CPU wheel on disk"

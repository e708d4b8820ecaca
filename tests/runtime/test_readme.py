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


def _section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_command_synopsis_names_every_option_of_each_command():
    from runtime.cli import build_parser

    synopsis = _section("Command line").split("```text\n", 1)[1].split("```", 1)[0]
    lines = {line.split()[1]: line for line in synopsis.splitlines() if line.startswith("nodetrainer ")}
    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name, parser in subparsers.items():
        assert name in lines, f"the README's synopsis lacks `nodetrainer {name}`"
        options = [o for a in parser._actions for o in a.option_strings[:1] if o != "-h"]
        missing = [o for o in options if o not in lines[name]]
        assert not missing, f"`nodetrainer {name}` synopsis lacks {missing}"


def test_presets_table_lists_every_shipped_graph():
    table = _section("Presets")
    for graph in sorted((ROOT / "graphs").glob("*.yaml")):
        assert f"| `{graph.name}` |" in table, f"{graph.name} is not in the README's presets table"


def test_run_folder_names_in_the_readme_are_the_ones_runs_get():
    import yaml

    from runtime.workspace import slug

    readme = (ROOT / "README.md").read_text()
    names = {slug(yaml.safe_load(p.read_text())["name"]) for p in (ROOT / "graphs").glob("*.yaml")}
    stems = {p.stem for p in (ROOT / "graphs").glob("*.yaml")}
    used = set(re.findall(r"runs/([a-z0-9._-]+?)-<", readme))
    assert used, "the README names no run folder"
    wrong = sorted(u for u in used if u not in names)
    assert not wrong, f"run folders named after files, not graph names: {wrong} (graph names: {sorted(names)})"
    assert "sd-1.5-lora" in used and not (used & (stems - names))


def test_torch_instructions_cover_cpu_only_and_gpu_machines():
    setup = _section("Set up")
    assert "download.pytorch.org/whl/cpu" in setup, "say how to get the CPU-only wheel"
    assert "on PyPI that is a CUDA build" in setup and "macOS" in setup

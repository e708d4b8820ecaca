"""`nodetrainer edit`: the subcommand opens the editor; other subcommands never import Qt."""

from __future__ import annotations

import json
import subprocess
import sys

from runtime import cli


def test_edit_subcommand_passes_the_graph_to_the_editor(monkeypatch, tmp_path):
    import editor.app

    calls = []
    monkeypatch.setattr(editor.app, "main", lambda argv: calls.append(argv) or 0)
    assert cli.main(["edit", "g.yaml", "--runs-dir", str(tmp_path)]) == 0
    assert calls == [["g.yaml", "--runs-dir", str(tmp_path)]]
    assert cli.main(["edit"]) == 0 and calls[-1] == []


def test_validate_and_nodes_do_not_import_qt(tmp_path):
    code = (
        "import sys, json\n"
        "from runtime import cli\n"
        "cli.main(['nodes'])\n"
        "cli.main(['validate', 'graphs/example-manifest.yaml'])\n"
        "print(json.dumps([m for m in ('PySide6', 'NodeGraphQt', 'editor.canvas') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=cli.Path(__file__).resolve().parents[2])
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_screenshot_script_renders_the_editor_with_a_graph(tmp_path):
    """The README's picture comes from this script; without a run it needs no torch."""
    from PIL import Image, ImageStat

    from tests.conftest import ROOT, subprocess_env

    out = tmp_path / "shot.png"
    env = subprocess_env(QT_QPA_PLATFORM="offscreen")
    r = subprocess.run([sys.executable, "-m", "editor.screenshot", "graphs/quickstart.yaml", "--no-run",
                        "--size", "1280x800", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with Image.open(out) as im:
        assert im.size == (1280, 800)
        spread = ImageStat.Stat(im.convert("L")).stddev[0]
    assert spread > 10, "the picture is blank"
    assert not list(tmp_path.glob(".shot.png.*")), "written atomically"


def test_edit_without_a_display_says_how_to_run_instead_of_aborting(tmp_path):
    """Qt aborts (rc 134) when it finds no display; the command says what to do in one line."""
    from tests.conftest import ROOT, subprocess_env

    env = subprocess_env()
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        env.pop(var, None)
    r = subprocess.run([sys.executable, "-m", "runtime", "edit", "graphs/quickstart.yaml"], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode in (1, 2), (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-2000:]
    assert "no display" in lines[0] and "xvfb-run nodetrainer edit" in lines[0]
    assert "QT_QPA_PLATFORM=offscreen" in lines[0]


def test_display_check_trusts_platforms_that_need_no_display():
    from editor.app import display_problem

    assert display_problem({}, "linux")
    assert display_problem({"QT_QPA_PLATFORM": "xcb"}, "linux")
    assert display_problem({"QT_QPA_PLATFORM": "wayland;xcb", "DISPLAY": ""}, "linux")
    assert display_problem({"DISPLAY": ":99"}, "linux") is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert display_problem({"QT_QPA_PLATFORM": "vnc:size=800x600"}, "linux") is None
    assert display_problem({"QT_QPA_PLATFORM": "xcb;offscreen"}, "linux") is None
    assert display_problem({}, "win32") is None and display_problem({}, "darwin") is None

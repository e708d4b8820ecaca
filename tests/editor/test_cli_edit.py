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

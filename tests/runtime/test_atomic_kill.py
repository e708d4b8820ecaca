"""A process killed (SIGKILL, no clean-up) in the middle of a save leaves the previous file or
folder intact: what every saver and the backups write through runtime.fileio."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import subprocess_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

# The child writes version 1 completely, then starts version 2: it writes half of the data, says
# "mid" and waits to be killed before writing the rest.
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from runtime.fileio import atomic_dir, atomic_path

    target, kind = Path(sys.argv[1]), sys.argv[2]
    chunk = bytes(1 << 20)

    def write(path, version, stop_midway):
        with open(path, "wb") as f:
            f.write(b"v%d:" % version)
            f.write(chunk)
            f.flush()
            if stop_midway:
                print("mid", flush=True)
                time.sleep(60)
            f.write(chunk)

    for version in (1, 2):
        if kind == "file":
            with atomic_path(target) as tmp:
                write(tmp, version, version == 2)
        else:
            with atomic_dir(target) as tmp:
                write(tmp / "weights.bin", version, False)
                write(tmp / "meta.json", version, version == 2)
        print("done", version, flush=True)
""")


def kill_midway(target, kind):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(target), kind], stdout=subprocess.PIPE, text=True,
                            env=subprocess_env())
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "mid":
                break
        assert lines == ["done 1", "mid"], lines
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def complete_version_1(path):
    data = path.read_bytes()
    return data.startswith(b"v1:") and len(data) == 3 + 2 * (1 << 20)


def test_a_file_save_killed_midway_keeps_the_previous_file(tmp_path):
    target = tmp_path / "lora.safetensors"
    kill_midway(target, "file")
    assert complete_version_1(target)
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".lora.safetensors."), \
        "the half-written version 2 stays in a hidden temporary file"


def test_a_folder_save_killed_midway_keeps_the_previous_folder(tmp_path):
    from runtime.backups import list_backups

    target = tmp_path / "backups" / "step-000002"
    kill_midway(target, "dir")
    assert complete_version_1(target / "weights.bin") and complete_version_1(target / "meta.json")
    hidden = [p for p in target.parent.iterdir() if p != target]
    assert len(hidden) == 1 and hidden[0].name.startswith(".step-000002.")
    (hidden[0] / "meta.json").write_text("{}")  # even a complete-looking leftover is no backup
    (target / "meta.json").write_text('{"step": 2}')
    assert list_backups(tmp_path) == [target]

"""nodetrainer's desktop editor: a Qt canvas over the runtime's graph files.

``nodetrainer edit [GRAPH]`` (or ``python -m editor``) opens it. The editor
knows node *specs* only; runs happen in a child ``nodetrainer run`` process.
Importing this package does not import Qt; ``editor.app.main`` does.
"""


def main(argv: list[str] | None = None) -> int:
    from .app import main as _main

    return _main(argv)

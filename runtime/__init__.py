"""nodetrainer's runtime: node API, types, registry, graph files, validation, executor, events, CLI.

Importing it never imports torch or Qt. Node authors need only::

    from runtime import node, Input, Output, Param, Choice, Device, File, Dir, FileOrDir, RunPath, StrList, Seed,
                        Text
"""

__version__ = "0.1.0"

from .params import Choice, Device, Dir, File, FileOrDir, Param, RunPath, Seed, StrList, TextKind as Text  # noqa: E402
from .port_types import PortType, is_compatible, sample_type, value_type  # noqa: E402
from .spec import Input, NodeSpec, Output, node  # noqa: E402

__all__ = [
    "__version__", "node", "Input", "Output", "Param", "Choice", "Device", "File", "Dir", "FileOrDir", "RunPath",
    "StrList", "Seed", "Text",
    "NodeSpec", "PortType", "is_compatible", "value_type", "sample_type",
]

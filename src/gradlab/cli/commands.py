"""The ``gradlab`` sub-commands, one module per family; ``main`` looks each up here by
name (``cmd_<command>``). Each returns an exit code; bad input raises UsageError (or a
data/device error), which ``main`` prints without a traceback."""
from __future__ import annotations

from .export import cmd_export
from .info_command import cmd_bench, cmd_info
from .search_command import cmd_search
from .train_command import CHECKPOINT, cmd_train

__all__ = ["CHECKPOINT", "cmd_bench", "cmd_export", "cmd_info", "cmd_search", "cmd_train"]

"""``safetyheads`` command line: thin wrappers over the library.

The console entry point (``safetyheads.cli:main``). The commands live in ``safetyheads.commands``:
``parser`` (the parser, ``main`` and the one-line errors), ``args`` (the options the subcommands
share), and one module per subcommand; the names below are re-exported from there.
"""

from __future__ import annotations

import sys

from .commands.args import add_ablation_args, add_model_args, add_prompt_args, load_from_args
from .commands.args import first_line as _first_line, slug as _slug  # noqa: F401 (imported from here before)
from .commands.export import cmd_export
from .commands.models import cmd_models
from .commands.parser import (DEBUG_ENV, EXIT_INTERRUPTED, EXIT_USAGE, OneLineArgumentParser, UsageError,
                              build_parser, error_message, main)
from .commands.ships import SHIPS_COLUMNS, cmd_ships

__all__ = ["DEBUG_ENV", "EXIT_INTERRUPTED", "EXIT_USAGE", "SHIPS_COLUMNS", "OneLineArgumentParser", "UsageError",
           "add_ablation_args", "add_model_args", "add_prompt_args", "build_parser", "cmd_export", "cmd_models",
           "cmd_ships", "error_message", "load_from_args", "main"]

if __name__ == "__main__":
    sys.exit(main())

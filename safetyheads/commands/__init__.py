"""Subcommands of the ``safetyheads`` CLI beyond ships/export/models: one module each, ``register(subparsers)``."""

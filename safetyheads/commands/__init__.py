"""The ``safetyheads`` command line (``safetyheads.cli:main`` is its entry point).

``parser`` builds the parser and runs ``main``; ``args`` holds the options the subcommands share;
each subcommand is one module with ``register(subparsers)`` and its ``cmd_<name>(args)``. The
subcommands check their flags, build a job (``safetyheads.jobs``) before any model loads, and run
it into a results file.
"""

"""The ``safetyheads`` command line (``safetyheads.cli:main`` is its entry point).

``parser`` builds the parser and runs ``main``; ``args`` holds the options the subcommands share;
each subcommand is one module whose ``register(subparsers)`` adds its options and the function it
runs. The commands that compute check their flags, build a job (``safetyheads.jobs``) before any
model loads, and run it into a results file that a rerun resumes.
"""

"""The command line (``python -m replication``): the parser and dispatch table (``main``), one module per
subcommand that needs more than a line (``run``, ``responses``; ``update-baselines`` and ``claims`` call
their stage directly), and what a run is made of (``preflight``, ``artefact``, ``plan``, ``extension``)."""

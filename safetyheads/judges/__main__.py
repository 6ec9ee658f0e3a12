"""``python -m safetyheads.judges --evaluate | --calibrate-nll``: see ``evaluation.main``."""

from .evaluation import main

raise SystemExit(main())

"""``python -m replication``: the harness's command line (``replication.cli``)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())

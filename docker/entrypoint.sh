#!/bin/sh
# `nox ...` runs the repository's sessions in the image's locked environment: no session venvs
# and no installs (the container is offline and everything is already there). Anything else
# (`safetyheads ...`, `pytest`, `bash`) runs as given.
set -e
if [ "$1" = "nox" ]; then
    shift
    exec nox --no-venv --no-install -f /src/noxfile.py "$@"
fi
exec "$@"

#!/bin/sh
# `nox ...` runs the repository's sessions in the image's locked environment: no session venvs
# and no installs (the container is offline and everything is already there). Anything else
# (`safetyheads ...`, `pytest`, `bash`) runs as given.
#
# The prepared model cache ($SAFETYHEADS_PREPARED_CACHE: the embedded model dequantised at build
# time) is root's and read-only; the library also writes to its cache (the datasets cache), so the
# run gets a cache of its own at $SAFETYHEADS_CACHE (under /out) whose gguf/ entries link to the
# prepared ones. Where that cannot be made (an /out this uid may not write), say so and go on:
# commands that write nothing (`nox --list`, `safetyheads models`) still work.
set -e
prepared="${SAFETYHEADS_PREPARED_CACHE:-}"
cache="${SAFETYHEADS_CACHE:-}"
if [ -n "$prepared" ] && [ -n "$cache" ] && [ "$prepared" != "$cache" ] && [ -d "$prepared/gguf" ]; then
    if mkdir -p "$cache/gguf" 2>/dev/null && [ -w "$cache/gguf" ]; then
        for entry in "$prepared"/gguf/*; do
            [ -d "$entry" ] || continue
            [ -e "$cache/gguf/${entry##*/}" ] || ln -s "$entry" "$cache/gguf/${entry##*/}"
        done
    else
        echo "entrypoint: cannot write the cache $cache as uid $(id -u): mount a folder this uid owns at /out" \
             "(-v \"\$PWD/out:/out\")" >&2
    fi
fi
if [ "$1" = "nox" ]; then
    shift
    exec nox --no-venv --no-install -f /src/noxfile.py "$@"
fi
exec "$@"

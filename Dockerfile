# blogmirror in a container: `docker build -t blogmirror .`, then
#   docker run -d --env-file .env -v blogmirror-data:/data blogmirror
# (or compose.yaml). The SQLite database lives in the volume at /data.

ARG PYTHON_VERSION=3.11

# Build the project's wheel apart, so the image holds the installed package only,
# not the source tree it came from.
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY storage ./storage
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim-bookworm
COPY --from=build /wheels /wheels
COPY deploy/healthcheck.py /usr/local/lib/blogmirror/healthcheck.py
# Dependencies come as wheels from PyPI: no compiler needed in the slim image.
RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin blogmirror \
    && mkdir /data \
    && chown blogmirror:blogmirror /data

# Logs go to stderr unbuffered, so `docker logs` shows them as they happen.
ENV PYTHONUNBUFFERED=1 \
    DATABASE_PATH=/data/blogmirror.db
# The working directory is the data volume: a `.env` put there is read (the
# environment, e.g. compose's env_file, wins), and relative paths land in the volume.
WORKDIR /data
VOLUME ["/data"]
USER blogmirror

# Probes http://127.0.0.1:$WEB_PORT/healthz when WEB_PORT is set (README, "Health
# and metrics"); without WEB_PORT there is no server to probe and the check passes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/lib/blogmirror/healthcheck.py"]

ENTRYPOINT ["blogmirror"]

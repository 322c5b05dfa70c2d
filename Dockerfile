# The Kiro app image: dbctl with its dependencies, migrations/ and seeds/.
# The migration Job, the seed Job and the backend (its init containers and the
# stand-in server `dbctl serve`) all run it; see k8s/dev/.
FROM python:3.12-slim-bookworm

# No .pyc files at run time: the root filesystem is read-only in the pods.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed numeric user: the manifests say runAsUser 10001, and a numeric USER
# lets the kubelet prove runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 kiro \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin kiro

WORKDIR /app

# The package and its pinned dependencies (pyproject.toml). pip byte-compiles
# what it installs, here as root, so nothing needs writing at run time.
COPY pyproject.toml ./
COPY tools/ tools/
RUN pip install . && rm -rf tools build

# Owned by root, readable by everyone: the app can read them and change nothing.
COPY migrations/ migrations/
COPY seeds/ seeds/

ENV DBCTL_MIGRATIONS=/app/migrations \
    DBCTL_SEEDS=/app/seeds

USER 10001:10001
EXPOSE 8080
CMD ["dbctl", "serve", "--host", "0.0.0.0", "--port", "8080"]

# The Kiro app image: dbctl with its dependencies, migrations/ and seeds/.
# The migration Job, the seed Job and the backend (its init containers and the
# stand-in server `dbctl serve`) all run it; see k8s/dev/.
#
# It builds with no registry and no PyPI: scripts/container-images makes BASE
# (Debian bookworm with python3, by debootstrap on the host) and build/wheels
# (dbctl and its pinned dependencies, downloaded on the host for Python 3.11),
# then runs `docker build --build-arg BASE=... .`.
ARG BASE=kiro-local/bookworm:latest

FROM ${BASE} AS install
# pip, unpacked from its wheel, exists in this stage only: the final image holds no pip.
# No index: nothing is fetched, everything comes from build/wheels. pip byte-compiles
# what it installs, which matters: the root filesystem is read-only at run time.
ENV PYTHONPATH=/opt/pip PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY build/wheels/deps/ /wheels/deps/
RUN python3 -m zipfile -e /wheels/deps/pip-*.whl /opt/pip \
 && python3 -m venv --without-pip /opt/venv \
 && /opt/venv/bin/python -m pip install --find-links /wheels/deps -r /wheels/deps/requirements.txt
# dbctl in a layer of its own: a change to its code does not reinstall the dependencies.
COPY build/wheels/dbctl/ /wheels/dbctl/
RUN /opt/venv/bin/python -m pip install --no-deps /wheels/dbctl/*.whl

FROM ${BASE}
# No .pyc files at run time (nothing could write them); output unbuffered for `kubectl logs`.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

# A fixed numeric user: the manifests say runAsUser 10001, and a numeric USER
# lets the kubelet prove runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 kiro \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin kiro

# The standard library's .pyc files come from Debian's packages; this only fills any gap.
RUN python3 -c 'import compileall, sysconfig; compileall.compile_dir(sysconfig.get_path("stdlib"), quiet=1, workers=0)'

COPY --from=install /opt/venv /opt/venv

WORKDIR /app
# Owned by root, readable by everyone: the app can read them and change nothing.
COPY migrations/ migrations/
COPY seeds/ seeds/

ENV DBCTL_MIGRATIONS=/app/migrations \
    DBCTL_SEEDS=/app/seeds

USER 10001:10001
EXPOSE 8080
CMD ["dbctl", "serve", "--host", "0.0.0.0", "--port", "8080"]

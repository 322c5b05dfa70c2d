#!/usr/bin/env bash
# The official postgres image's entrypoint, reduced to what the stand-in needs:
# on the first start (no PG_VERSION in PGDATA) initdb with POSTGRES_USER and
# POSTGRES_PASSWORD, password authentication from any host, POSTGRES_DB created,
# /docker-entrypoint-initdb.d/*.sql and *.sh run; then exec the server.
set -Eeuo pipefail

# Options alone ("-c fsync=off") are the server's, as in the official image.
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "${1:-}" != postgres ]; then exec "$@"; fi

mkdir -p "$PGDATA"
chmod 700 "$PGDATA" 2>/dev/null || :  # initdb insists; may fail when not the owner (initdb then says why)
if [ "$(id -u)" = 0 ]; then
    # Started as root (docker run without --user): hand the data to postgres and run as postgres.
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "Error: the database is uninitialized and POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of options, as in the official image
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") ${POSTGRES_INITDB_ARGS:-}
    printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"

    # A server on the socket only, so nobody connects before the set-up is done.
    export PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --no-psqlrc --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "running $f"; . "$f" ;;
            *.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 --no-psqlrc --dbname "$POSTGRES_DB" -f "$f" ;;
            *) if [ -e "$f" ]; then echo "ignoring $f"; fi ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    unset PGUSER PGPASSWORD
    echo "PostgreSQL init process complete; ready for start up."
else
    echo "PostgreSQL Database directory appears to contain a database; Skipping initialization"
fi
exec "$@"

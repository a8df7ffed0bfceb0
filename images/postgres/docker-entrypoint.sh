#!/bin/bash
# Entrypoint of tether's offline Postgres 15 image: a small subset of the
# official postgres image's docker-entrypoint.sh, enough for testcontainers'
# PostgresContainer and for running a server on a (named) volume.
#
#   POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless
#   POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default $POSTGRES_USER),
#   POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (default scram-sha-256),
#   PGDATA (default /var/lib/postgresql/data), /docker-entrypoint-initdb.d/*.
#
# As root it fixes ownership of $PGDATA and the socket directory, then re-execs
# itself as the postgres user. An empty $PGDATA is initialised (initdb, a
# socket-only temporary server for creating the database and running init
# scripts); an existing one is reused. Finally it execs postgres, which thus
# runs as PID 1 and handles SIGTERM (smart), SIGINT (fast; the image's
# STOPSIGNAL) and SIGQUIT itself.
set -Eeo pipefail

log() { echo "entrypoint: $*" >&2; }

# `docker run IMAGE -c foo=bar` -> postgres -c foo=bar
if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
    exec "$@"
fi

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"

if [ "$(id -u)" = '0' ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 00700 "$PGDATA" || :
    chmod 03775 /var/run/postgresql || :
    find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    POSTGRES_USER="${POSTGRES_USER:-postgres}"
    POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
    auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != 'trust' ]; then
        log 'error: database is uninitialized and POSTGRES_PASSWORD is not set;'
        log '       set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust).'
        exit 1
    fi

    log "initialising database cluster in $PGDATA"
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a word list
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
        ${POSTGRES_INITDB_ARGS:-}
    # Local socket and loopback connections stay trusted (initdb default, as in
    # the official image); everything else needs the password.
    printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"

    # Temporary server on the unix socket only, so nothing can reach it over
    # TCP (readiness probes on 127.0.0.1 keep failing until the real start).
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start

    psql_=(psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "$POSTGRES_USER")
    if [ "$POSTGRES_DB" != 'postgres' ]; then
        exists="$("${psql_[@]}" --dbname postgres -tA --set db="$POSTGRES_DB" \
            <<< "SELECT 1 FROM pg_database WHERE datname = :'db'")"
        if [ -z "$exists" ]; then
            "${psql_[@]}" --dbname postgres --set db="$POSTGRES_DB" <<< 'CREATE DATABASE :"db" ;'
        fi
    fi

    shopt -s nullglob
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh)
                # shellcheck disable=SC1090  # init scripts are user-supplied
                if [ -x "$f" ]; then log "running $f"; "$f"
                else log "sourcing $f"; . "$f"; fi ;;
            *.sql) log "running $f"; "${psql_[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) log "running $f"; gunzip -c "$f" | "${psql_[@]}" --dbname "$POSTGRES_DB" ;;
            *) log "ignoring $f" ;;
        esac
    done
    shopt -u nullglob

    pg_ctl -D "$PGDATA" -m fast -w stop
    log 'PostgreSQL init process complete; ready for start up.'
else
    log "PostgreSQL database directory $PGDATA contains a database; skipping initialisation"
fi

exec "$@"

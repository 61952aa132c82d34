#!/usr/bin/env bash
# Initializes the cluster on first start (superuser `writeback`, database
# `writeback`, password from $POSTGRES_PASSWORD_FILE), then runs PostgreSQL in
# the foreground, listening on every address of the container with
# scram-sha-256 authentication.
set -euo pipefail
: "${POSTGRES_PASSWORD_FILE:?}"
BIN=/usr/lib/postgresql/15/bin
PGDATA=/var/lib/postgresql/data
install -d -o postgres -g postgres -m 0700 "$PGDATA"
install -d -o postgres -g postgres -m 2775 /var/run/postgresql
if [[ ! -s $PGDATA/PG_VERSION ]]; then
    pwfile=$(mktemp)
    install -m 0600 -o postgres "$POSTGRES_PASSWORD_FILE" "$pwfile"
    runuser -u postgres -- "$BIN/initdb" -D "$PGDATA" -U writeback --pwfile="$pwfile" \
        --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "CREATE DATABASE writeback" | runuser -u postgres -- "$BIN/postgres" --single -D "$PGDATA" postgres >/dev/null
    echo "writeback-postgres: initialized $PGDATA"
fi
exec runuser -u postgres -- "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*'

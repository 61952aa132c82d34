#!/usr/bin/env bash
# Makes the local PostgreSQL answer for the storage tests (as root, Debian's
# `postgresql` package installed by scripts/install-deps.sh):
#
#   sudo scripts/postgres.sh
#
# - creates the cluster when the package left none, and starts it when it is
#   down (`pg_ctlcluster --skip-systemctl-redirect` without systemd, the
#   cluster's unit with it);
# - lets the role `writeback_test` (LOGIN CREATEDB, not a superuser) connect
#   from 127.0.0.1 without a password: one `trust` line for that role only,
#   at the top of pg_hba.conf. The tests create a database of their own per
#   test and drop it afterwards (WRITEBACK_TEST_POSTGRES_URL, default
#   postgres://writeback_test@127.0.0.1:5432/postgres);
# - waits until 127.0.0.1:5432 accepts connections.
# Safe to re-run: what is already in place is left as it is.
set -euo pipefail
export LC_ALL=C

ROLE=writeback_test
MARK="# writeback tests (scripts/postgres.sh)"

log() { printf 'postgres: %s\n' "$*"; }
die() {
    printf 'postgres: error: %s\n' "$*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root"
command -v pg_lsclusters >/dev/null || die "PostgreSQL is not installed (scripts/install-deps.sh)"

# The newest installed server version and its cluster "main".
version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -n | tail -n1)
[[ -n $version ]] || die "no PostgreSQL server version under /usr/lib/postgresql"
if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$version main"; then
    log "creating cluster $version/main"
    pg_createcluster "$version" main >/dev/null
fi
conf_dir=/etc/postgresql/$version/main
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
[[ $port == 5432 ]] || die "cluster $version/main listens on port $port, not 5432"

hba=$conf_dir/pg_hba.conf
if ! grep -qF "$MARK" "$hba"; then
    { printf '%s\nhost all %s 127.0.0.1/32 trust\n\n' "$MARK" "$ROLE"; cat "$hba"; } >"$hba.new"
    chown --reference="$hba" "$hba.new"
    chmod --reference="$hba" "$hba.new"
    mv "$hba.new" "$hba"
    log "pg_hba.conf: $ROLE may connect from 127.0.0.1 without a password"
    reload=1
fi

status=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}')
if [[ $status != online ]]; then
    log "starting cluster $version/main"
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl start "postgresql@$version-main"
    else
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
elif [[ -n ${reload:-} ]]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
fi

for _ in $(seq 1 100); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 0.1
done
pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL does not answer on 127.0.0.1:5432"

psql_admin() { runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 "$@" </dev/null; }
if [[ $(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'") != 1 ]]; then
    psql_admin -c "CREATE ROLE $ROLE LOGIN CREATEDB"
    log "created role $ROLE (LOGIN CREATEDB)"
fi
log "ok: PostgreSQL $version answers on 127.0.0.1:5432 (role $ROLE)"

#!/usr/bin/env bash
# The docker-compose evaluation of writeback in one command (as root, on a
# machine with a Docker engine; scripts/install-deps.sh installs the rest):
#
#   sudo scripts/compose.sh up [--postgres]  # build, start, wait until both agents are online
#   sudo scripts/compose.sh ctl status       # writebackctl as the tenant's administrator
#   sudo scripts/compose.sh down             # stop and remove everything, volumes included
#   sudo scripts/compose.sh build            # binaries and images only
#   sudo scripts/compose.sh prebuild         # the images that need no binaries (CI, beside the build)
#   sudo scripts/compose.sh ps|logs|restart|exec …   # any other docker-compose command
#
# `up`:
# 1. builds the Rust binaries on the host (`cargo build`, profile
#    $WRITEBACK_CARGO_PROFILE, default release) and stages them, debug
#    information stripped, in .local/docker/bin/ for deploy/docker/Dockerfile;
# 2. picks the base image (scripts/base-image.sh: debian:bookworm-slim, or the
#    same release built locally with debootstrap when no registry is reachable)
#    and builds every image of docker-compose.yml on it;
# 3. creates the secrets that do not exist yet in $WRITEBACK_SECRETS_DIR
#    (default deploy/secrets: random passwords, readable only by the services'
#    user, uid 10001);
# 4. starts the project; with --postgres, PostgreSQL first (profile "postgres")
#    and the control plane on it; and waits until both agents are online and
#    the portal answers;
# 5. copies the control plane's CA certificate and the administrator token to
#    $WRITEBACK_COMPOSE_STATE (default .local/compose/<project>, 0700) for `ctl`,
#    and the CA certificates of the portal (portal-ca.pem) and of the OpenID
#    provider (idp-ca.pem) for a browser to trust.
# Re-running `up` keeps what runs and rebuilds what changed.
#
# Variables: WRITEBACK_COMPOSE_PROJECT (default writeback), WRITEBACK_CP_PORT
# (the control plane on 127.0.0.1, default 8443), WRITEBACK_PORTAL_PORT (the
# portal, default 8444), WRITEBACK_IDP_PORT (the OpenID provider, default
# 8445), WRITEBACK_SECRETS_DIR,
# WRITEBACK_CARGO_PROFILE, CARGO_TARGET_DIR (default ~/.cache/writeback/target),
# WRITEBACK_COMPOSE_TIMEOUT (seconds `up` waits for the agents, default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export COMPOSE_PROJECT_NAME=${WRITEBACK_COMPOSE_PROJECT:-writeback}
export WRITEBACK_CP_PORT=${WRITEBACK_CP_PORT:-8443}
export WRITEBACK_PORTAL_PORT=${WRITEBACK_PORTAL_PORT:-8444}
export WRITEBACK_IDP_PORT=${WRITEBACK_IDP_PORT:-8445}
PORTAL_URL=https://127.0.0.1:$WRITEBACK_PORTAL_PORT
export WRITEBACK_SECRETS_DIR=${WRITEBACK_SECRETS_DIR:-$ROOT/deploy/secrets}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/writeback/target}
PROFILE=${WRITEBACK_CARGO_PROFILE:-release}
STATE=${WRITEBACK_COMPOSE_STATE:-$ROOT/.local/compose/$COMPOSE_PROJECT_NAME}
TIMEOUT=${WRITEBACK_COMPOSE_TIMEOUT:-300}
STAGE=$ROOT/.local/docker/bin
BINARIES=(writeback-control-plane writeback-relay writeback-agent writebackctl writeback-portal writeback-lab)
# The uid every writeback service runs as (deploy/docker/Dockerfile).
SERVICE_UID=10001
DOMAINS=(contoso fabrikam)

log() { printf 'compose: %s\n' "$*" >&2; }
die() {
    printf 'compose: error: %s\n' "$*" >&2
    exit 1
}

bin_dir() {
    case $PROFILE in
        dev | test) echo "$CARGO_TARGET_DIR/debug" ;;
        *) echo "$CARGO_TARGET_DIR/$PROFILE" ;;
    esac
}

# Compose with every profile, so `down` and `ps` see the PostgreSQL service too.
dc() { docker-compose --profile postgres "$@"; }

binaries() {
    log "cargo build --profile $PROFILE (cache in $CARGO_TARGET_DIR)"
    # --workspace: the same feature set as the test build, so its artifacts are reused.
    cargo build --locked --workspace --bins --profile "$PROFILE" >&2
    mkdir -p "$STAGE"
    for b in "${BINARIES[@]}"; do
        strip --strip-debug -o "$STAGE/$b.tmp" "$(bin_dir)/$b"
        mv "$STAGE/$b.tmp" "$STAGE/$b"
    done
}

images() {
    local base
    base=$(scripts/base-image.sh)
    export WRITEBACK_BASE_IMAGE=$base
    log "building the images on $base"
    dc build >&2
    # Layers of earlier builds that no tag names any more.
    docker image prune -f --filter label=writeback.image=1 >/dev/null
}

# The images that need no writeback binary (the Samba DCs, PostgreSQL, the
# egress filters) on the base image: what a cold machine spends minutes on
# (apt in each), made beside the cargo build (scripts/test.sh) so that `up`
# finds them in the engine's cache.
prebuild() {
    local base
    base=$(scripts/base-image.sh)
    export WRITEBACK_BASE_IMAGE=$base
    log "building the images that need no binaries on $base"
    dc build postgres dc-contoso egress-contoso >&2
}

random_password() {
    # 24 random characters plus one of each class AD's complexity rule asks for.
    printf '%s-Aa1' "$(head -c 18 /dev/urandom | base64 | tr -d '/+=\n')"
}

secret() { # name, contents
    local file=$WRITEBACK_SECRETS_DIR/$1
    [[ -s $file ]] && return 0
    (umask 077 && printf '%s' "$2" >"$file")
    chown "$SERVICE_UID:$SERVICE_UID" "$file"
    chmod 0400 "$file"
    log "created secret $file"
}

secrets() {
    mkdir -p "$WRITEBACK_SECRETS_DIR"
    for d in "${DOMAINS[@]}"; do
        secret "$d-admin-password" "$(random_password)"
        secret "$d-svc-password" "$(random_password)"
    done
    secret demo-password "$(random_password)"
    secret idp-password "$(random_password)"
    # Letters and digits only: glewlwyd does not form-decode an HTTP Basic secret.
    secret portal-client-secret "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    if [[ ! -s $WRITEBACK_SECRETS_DIR/postgres-password ]]; then
        local pw
        pw=$(random_password)
        secret postgres-password "$pw"
        rm -f "$WRITEBACK_SECRETS_DIR/postgres-pgpass"
        secret postgres-pgpass "postgres:5432:writeback:writeback:$pw"
    fi
}

ctl() {
    [[ -f $STATE/admin.token ]] || die "no administrator token in $STATE; run scripts/compose.sh up first"
    "$(bin_dir)/writebackctl" --control-plane "https://127.0.0.1:$WRITEBACK_CP_PORT" \
        --ca-file "$STATE/ca.pem" --token-file "$STATE/admin.token" "$@"
}

# Prints a file of the operator volume (the CA certificate, the admin token).
operator_file() {
    dc run --rm --no-deps -T --entrypoint cat setup "/var/lib/writeback/operator/$1"
}

# Prints a file of the idp volume (the portal's and the provider's CA certificates).
lab_file() {
    dc run --rm --no-deps -T --entrypoint cat setup-idp "/var/lib/writeback/lab/$1"
}

wait_healthy() { # service, seconds
    local id deadline=$((SECONDS + $2))
    id=$(dc ps -q "$1")
    until [[ $(docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null) == healthy ]]; do
        ((SECONDS < deadline)) || die "$1 is not healthy after $2 s: $(dc logs --tail 20 "$1")"
        sleep 1
    done
}

report_failure() {
    dc ps >&2 || true
    for s in control-plane-init setup setup-contoso setup-fabrikam agent-contoso agent-fabrikam idp setup-idp portal; do
        printf '\n--- %s ---\n' "$s" >&2
        dc logs --no-color --tail 15 "$s" >&2 || true
    done
    die "$1"
}

wait_for_agents() {
    local deadline=$((SECONDS + TIMEOUT)) online=0
    mkdir -p "$STATE"
    chmod 700 "$STATE"
    until [[ -s $STATE/admin.token ]]; do
        ((SECONDS < deadline)) || report_failure "the control plane was not initialized within ${TIMEOUT}s"
        if operator_file admin.token >"$STATE/admin.token.tmp" 2>/dev/null &&
            operator_file ca.pem >"$STATE/ca.pem" 2>/dev/null; then
            chmod 600 "$STATE/admin.token.tmp"
            mv "$STATE/admin.token.tmp" "$STATE/admin.token"
        else
            rm -f "$STATE/admin.token.tmp"
            sleep 1
        fi
    done
    while ((online < ${#DOMAINS[@]})); do
        ((SECONDS < deadline)) || report_failure "the agents were not online within ${TIMEOUT}s"
        sleep 1
        online=$(ctl agent list 2>/dev/null | grep -c online || true)
    done
}

wait_for_portal() {
    local deadline=$((SECONDS + TIMEOUT))
    lab_file portal/ca.pem >"$STATE/portal-ca.pem" && lab_file idp/tls/ca.pem >"$STATE/idp-ca.pem" ||
        report_failure "no portal or OpenID provider CA in the idp volume"
    until curl -fsS -o /dev/null --cacert "$STATE/portal-ca.pem" "$PORTAL_URL/signed-out" 2>/dev/null; do
        ((SECONDS < deadline)) || report_failure "the portal did not answer on $PORTAL_URL within ${TIMEOUT}s"
        sleep 1
    done
}

up() {
    local postgres=0
    case ${1:-} in
        --postgres) postgres=1 ;;
        "") ;;
        *) die "usage: scripts/compose.sh up [--postgres]" ;;
    esac
    command -v docker-compose >/dev/null || die "docker-compose is not installed (scripts/install-deps.sh)"
    local started=$SECONDS
    binaries
    secrets
    images
    export WRITEBACK_CP_DATABASE_URL=
    if ((postgres)); then
        export WRITEBACK_CP_DATABASE_URL=postgres://writeback@postgres:5432/writeback
        dc up -d --no-build postgres >&2
        wait_healthy postgres 120
    fi
    if ((postgres)); then dc up -d --no-build >&2; else docker-compose up -d --no-build >&2; fi ||
        report_failure "docker-compose up failed"
    wait_for_agents
    wait_for_portal
    log "up in $((SECONDS - started)) s; both agents online, the portal answers"
    cat <<TXT

writeback runs in docker-compose (project $COMPOSE_PROJECT_NAME, control plane on
https://127.0.0.1:$WRITEBACK_CP_PORT, $( ((postgres)) && echo PostgreSQL || echo SQLite)). Try:

  scripts/compose.sh ctl status
  scripts/compose.sh ctl agent list
  echo 'N3w-Passw0rd!' | scripts/compose.sh ctl password reset --user alice@contoso.test
  scripts/compose.sh ctl audit list

The demo users alice and bob exist in both domains with the password in
$WRITEBACK_SECRETS_DIR/demo-password.

The portal: $PORTAL_URL (its CA: $STATE/portal-ca.pem; the sign-in page's,
https://idp.localhost:$WRITEBACK_IDP_PORT: $STATE/idp-ca.pem — import both
into the browser, or accept its warnings). Sign in as (the password is in
$WRITEBACK_SECRETS_DIR/idp-password; the HOTP secret a self-service reset
asks for: scripts/compose.sh exec idp cat /var/lib/writeback/lab/idp/users.txt):
  alice     a user of contoso.test: change, reset (strong sign-in), unlock her own password
  helpdesk  the help desk: reset and unlock users
  itadmin   the global administrator: the on-premises integration page, the audit log

Remove everything with: scripts/compose.sh down
TXT
}

down() {
    dc down -v --remove-orphans >&2
    rm -rf "$STATE"
    log "removed project $COMPOSE_PROJECT_NAME, its volumes and $STATE"
}

case ${1:-} in
    up) shift && up "$@" ;;
    down) down ;;
    build) binaries && images ;;
    prebuild) prebuild ;;
    ctl) shift && ctl "$@" ;;
    "") die "usage: scripts/compose.sh up [--postgres]|down|build|prebuild|ctl ARGS|<docker-compose command>" ;;
    *) dc "$@" ;;
esac

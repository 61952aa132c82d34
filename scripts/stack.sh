#!/usr/bin/env bash
# The whole writeback stack on one Debian machine (as root):
#
#   sudo scripts/stack.sh up     # build, start two Samba AD domains, the control
#                                # plane (SQLite), a relay, one agent per domain,
#                                # an OpenID provider with demo people and the portal
#   sudo scripts/stack.sh down   # stop everything and remove its state
#   sudo scripts/stack.sh status # what runs
#
# `up` is safe to re-run: what already runs is kept. State, logs and the
# administrator token live in $WRITEBACK_STACK_DIR (default: .local/stack in
# the checkout). Ports: control plane 127.0.0.1:8443, relay 127.0.0.1:7443,
# portal https://127.0.0.1:8444, domain controllers on their own 127.0.0.N
# (LDAPS 636), the OpenID provider (glewlwyd, run by writeback-lab) on a free
# port of 127.0.0.1. Each agent binds as the service account svc-writeback,
# whose rights `up` grants with `writeback-agent permissions grant`. The
# demo people's sign-ins for the portal are in $WRITEBACK_STACK_DIR/lab/idp/users.txt.
# WRITEBACK_STACK_SKIP_INSTALL=1 skips scripts/install-deps.sh (the test
# suite sets it: it ran install-deps itself).
# WRITEBACK_STACK_CP_PORT, _RELAY_PORT and _PORTAL_PORT move the three fixed
# ports (tests/it/stack.rs runs a stack of its own beside yours).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=${WRITEBACK_STACK_DIR:-$ROOT/.local/stack}
TENANT=${WRITEBACK_TENANT:-demo}
DOMAINS=(contoso.test fabrikam.test)
CP_ADDR=127.0.0.1:${WRITEBACK_STACK_CP_PORT:-8443}
RELAY_ADDR=127.0.0.1:${WRITEBACK_STACK_RELAY_PORT:-7443}
PORTAL_ADDR=127.0.0.1:${WRITEBACK_STACK_PORTAL_PORT:-8444}
PORTAL_URL=https://$PORTAL_ADDR
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/writeback/target}
BIN=$CARGO_TARGET_DIR/debug

log() { printf 'stack: %s\n' "$*"; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

running() { [[ -f $STATE/pids/$1 ]] && kill -0 "$(cat "$STATE/pids/$1")" 2>/dev/null; }

start() { # name, command...
    local name=$1; shift
    if running "$name"; then
        log "$name already runs (pid $(cat "$STATE/pids/$name"))"
        return
    fi
    setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/pids/$name"
    log "started $name (pid $!, log $STATE/logs/$name.log)"
}

wait_for() { # description, seconds, test command...
    local what=$1 secs=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" 2>/dev/null; do
        ((SECONDS < deadline)) || die "$what did not come up within ${secs}s; see $STATE/logs"
        sleep 0.3
    done
}

stop() { # name: stop it and wait until it has gone
    running "$1" || return 0
    local pid
    pid=$(cat "$STATE/pids/$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    log "stopped $1"
}

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

ctl() {
    "$BIN/writebackctl" --control-plane "https://$CP_ADDR" --ca-file "$STATE/cp/ca.pem" \
        --token-file "$STATE/admin.token" "$@"
}

up() {
    # The test suite has installed everything already, and its Samba DCs
    # running beside this would trip install-deps' check for foreign ones.
    [[ -n ${WRITEBACK_STACK_SKIP_INSTALL:-} ]] || scripts/install-deps.sh
    log "building (cache in $CARGO_TARGET_DIR)"
    cargo build --locked --bins
    mkdir -p "$STATE"/{pids,logs,cp,relay,agents,lab}
    chmod 700 "$STATE"

    local fresh_lab=no
    running lab || fresh_lab=yes
    start lab "$BIN/writeback-lab" --dir "$STATE/lab" --portal-url "$PORTAL_URL" \
        $(printf -- '--domain %s ' "${DOMAINS[@]}")
    wait_for "the domain controllers and the OpenID provider" 180 test -f "$STATE/lab/ready"
    local idp=$STATE/lab/idp
    # A new lab is a new OpenID provider (new address and CA): the control
    # plane reads the provider's CA at start, so it starts again too.
    if [[ $fresh_lab == yes ]]; then stop control-plane; fi

    cat >"$STATE/cp.toml" <<TOML
data_dir = "$STATE/cp"
listen = "$CP_ADDR"
relay_urls = ["https://$RELAY_ADDR"]
tls_dns_names = ["localhost"]
tls_ip_addresses = ["127.0.0.1"]
[oidc]
ca_file = "$idp/ca.pem"
TOML
    if [[ ! -f $STATE/admin.token ]]; then
        "$BIN/writeback-control-plane" --config "$STATE/cp.toml" init --tenant "$TENANT" \
            --admin "admin@contoso.test" --client-app portal --token-file "$STATE/admin.token"
    fi
    if [[ ! -f $STATE/relay/relay.pem ]]; then
        "$BIN/writeback-control-plane" --config "$STATE/cp.toml" relay-cert --tenant "$TENANT" \
            --relay-id relay-1 --dns localhost --ip 127.0.0.1 --out-dir "$STATE/relay"
    fi
    cat >"$STATE/relay.toml" <<TOML
relay_id = "relay-1"
tenant = "$TENANT"
listen = "$RELAY_ADDR"
cert_file = "$STATE/relay/relay.pem"
key_file = "$STATE/relay/relay.key"
ca_file = "$STATE/relay/ca.pem"
TOML
    start relay "$BIN/writeback-relay" --config "$STATE/relay.toml"
    start control-plane "$BIN/writeback-control-plane" --config "$STATE/cp.toml" serve
    wait_for "the relay" 30 port_open "$RELAY_ADDR"
    wait_for "the control plane" 30 port_open "$CP_ADDR"

    for d in "${DOMAINS[@]}"; do
        if ! ctl domain list | cut -f1 | grep -qx "$d"; then
            ctl domain add "$d"
        fi
    done
    ctl settings set --cloud-sync-writeback on --sspr-writeback on --unlock-without-reset on >/dev/null
    # The tenant trusts the lab's OpenID provider and the portal's client is
    # registered: docker-compose's setup-idp job, run here on the host.
    WRITEBACKCTL=$BIN/writebackctl CONTROL_PLANE_URL=https://$CP_ADDR \
        WRITEBACK_SETUP_CA_FILE=$STATE/cp/ca.pem WRITEBACK_SETUP_TOKEN_FILE=$STATE/admin.token \
        WRITEBACK_LAB_DIR=$STATE/lab deploy/docker/setup.sh idp

    for d in "${DOMAINS[@]}"; do
        local a=$STATE/agents/$d
        if [[ ! -f $a/state/state.toml ]]; then
            mkdir -p "$a"
            # The one-time token goes to a 0600 file, never to a terminal
            # (a token file left by an enrollment that failed is replaced).
            ctl agent enroll-token --domain "$d" --out "$a/token" --force >/dev/null
            "$BIN/writeback-agent" enroll --control-plane "https://$CP_ADDR" \
                --token-file "$a/token" --state-dir "$a/state"
            rm -f "$a/token"
        fi
        cat >"$a/agent.toml" <<TOML
state_dir = "$a/state"
[directory]
urls = ["$(cat "$STATE/lab/$d/ldaps_url")"]
ca_file = "$STATE/lab/$d/ca.pem"
bind_dn = "$(cat "$STATE/lab/$d/svc_dn")"
bind_password_file = "$STATE/lab/$d/svc_password"
TOML
        # Tutorial step 1 (Set-AADCloudSyncPermissions): give the service
        # account exactly the rights writeback needs; idempotent.
        "$BIN/writeback-agent" --config "$a/agent.toml" permissions grant \
            --admin-dn "$(cat "$STATE/lab/$d/admin_dn")" --admin-password-file "$STATE/lab/$d/admin_password"
        "$BIN/writeback-agent" --config "$a/agent.toml" permissions check
        # The DCs get new addresses and credentials on each lab start, so an
        # agent always restarts with the current ones.
        stop "agent-$d"
        start "agent-$d" "$BIN/writeback-agent" --config "$a/agent.toml" run
    done
    cat >"$STATE/portal.toml" <<TOML
listen = "$PORTAL_ADDR"
public_url = "$PORTAL_URL"
tls_cert_file = "$STATE/lab/portal/cert.pem"
tls_key_file = "$STATE/lab/portal/key.pem"
control_plane_url = "https://$CP_ADDR"
control_plane_ca_file = "$STATE/cp/ca.pem"
[oidc]
issuer = "$(cat "$idp/issuer")"
client_id = "$(cat "$idp/client_id")"
client_secret_file = "$idp/client_secret"
ca_file = "$idp/ca.pem"
scopes = ["$(cat "$idp/audience")"]
strong_scopes = ["$(cat "$idp/strong_scope")"]
principal_claim = "upn"
resource = "$(cat "$idp/audience")"
TOML
    # The portal discovers the provider at start: it always starts again.
    stop portal
    start portal "$BIN/writeback-portal" --config "$STATE/portal.toml" serve
    wait_for "the portal" 30 curl -fsS -o /dev/null --cacert "$STATE/lab/portal/ca.pem" "$PORTAL_URL/signed-out"

    wait_for "the agents" 30 bash -c "[[ \$('$BIN/writebackctl' --control-plane https://$CP_ADDR --ca-file '$STATE/cp/ca.pem' --token-file '$STATE/admin.token' agent list | grep -c online) -ge ${#DOMAINS[@]} ]]"

    cat <<TXT

writeback is up. Try (the demo users' passwords are in $STATE/lab/users.txt):

  export WRITEBACK_CONTROL_PLANE=https://$CP_ADDR
  export WRITEBACK_CA_FILE=$STATE/cp/ca.pem
  export WRITEBACK_TOKEN_FILE=$STATE/admin.token
  alias writebackctl=$BIN/writebackctl

  writebackctl status
  writebackctl agent list
  echo 'N3w-Passw0rd!' | writebackctl password reset --user alice@contoso.test
  echo 'An0ther-Passw0rd!' | writebackctl password reset --user bob@fabrikam.test
  writebackctl audit list

The portal: $PORTAL_URL (its CA: $STATE/lab/portal/ca.pem; the sign-in
page's CA: $idp/ca.pem — import both into the browser, or accept its warnings).
Sign in as (password, and the HOTP secret a self-service reset asks for, in
$idp/users.txt):
  alice     a user: change, reset (strong sign-in), unlock her own password
  helpdesk  the help desk: reset and unlock users
  itadmin   the global administrator: the on-premises integration page, the audit log

Stop and remove everything with: scripts/stack.sh down
TXT
}

down() {
    for p in "$STATE/pids/portal" "$STATE"/pids/agent-* "$STATE/pids/control-plane" "$STATE/pids/relay" "$STATE/pids/lab"; do
        [[ -f $p ]] || continue
        local pid
        pid=$(cat "$p")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            log "stopped $(basename "$p")"
        fi
        rm -f "$p"
    done
    rm -rf "$STATE"
    log "removed $STATE"
}

status() {
    for p in "$STATE"/pids/*; do
        [[ -f $p ]] || continue
        if kill -0 "$(cat "$p")" 2>/dev/null; then log "$(basename "$p"): running"; else log "$(basename "$p"): stopped"; fi
    done
    if running control-plane; then ctl status || true; fi
    if running portal; then
        if curl -fsS -o /dev/null --cacert "$STATE/lab/portal/ca.pem" "$PORTAL_URL/signed-out"; then
            log "portal: $PORTAL_URL answers"
        else
            log "portal: $PORTAL_URL does not answer; see $STATE/logs/portal.log"
        fi
    fi
    if [[ -f $STATE/lab/idp/issuer ]]; then log "openid provider: $(cat "$STATE/lab/idp/issuer")"; fi
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: scripts/stack.sh up|down|status" ;;
esac

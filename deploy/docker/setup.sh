#!/usr/bin/env bash
# The one-shot set-up jobs of docker-compose.yml (idempotent; a second run
# changes nothing):
#
#   writeback-setup cloud    registers $DOMAINS and turns writeback on (the
#                            tutorial's toggles); on the "cloud" network.
#   writeback-setup forest   for one forest ($DOMAIN): enrolls its agent into
#                            /var/lib/writeback/agent (the agent's own volume)
#                            with a one-time token, then — bound as the
#                            domain's administrator — grants the agent's
#                            service account exactly the rights writeback
#                            needs (`writeback-agent permissions grant`, the
#                            tutorial's step 1) and checks them as the service
#                            account. On the cloud network and that forest's.
#   writeback-setup idp      makes the tenant trust the evaluation's OpenID
#                            provider (the `idp` service; its files read from
#                            $WRITEBACK_LAB_DIR/idp) as `writebackctl idp`
#                            does for any provider: principal from `upn`, roles
#                            from `groups`, a self-service reset needs the
#                            scope granted after HOTP; and registers the
#                            portal's client with origin `portal`.
#
# All read the operator's CA certificate and administrator token from
# /var/lib/writeback/operator (written by control-plane-init). Passwords come
# only from files (docker secrets), never from the command line.
#
# scripts/stack.sh runs `idp` on the host too, with the control plane's URL
# (CONTROL_PLANE_URL), the operator's files (WRITEBACK_SETUP_CA_FILE,
# WRITEBACK_SETUP_TOKEN_FILE), the lab's directory (WRITEBACK_LAB_DIR) and
# the CLI (WRITEBACKCTL) of its own.
set -euo pipefail
CP=${CONTROL_PLANE_URL:-https://control-plane:8443}
OPERATOR=/var/lib/writeback/operator
CA_FILE=${WRITEBACK_SETUP_CA_FILE:-$OPERATOR/ca.pem}
TOKEN_FILE=${WRITEBACK_SETUP_TOKEN_FILE:-$OPERATOR/admin.token}
LAB=${WRITEBACK_LAB_DIR:-/var/lib/writeback/lab}
log() { printf 'writeback-setup: %s\n' "$*"; }
ctl() { "${WRITEBACKCTL:-writebackctl}" --control-plane "$CP" --ca-file "$CA_FILE" --token-file "$TOKEN_FILE" "$@"; }

wait_for_control_plane() {
    for _ in $(seq 1 120); do
        ctl settings show >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    ctl settings show # fails with the reason
}

cloud() {
    : "${DOMAINS:?}"
    wait_for_control_plane
    for d in $DOMAINS; do
        ctl domain list | cut -f1 | grep -qx "$d" || ctl domain add "$d"
    done
    ctl settings set --cloud-sync-writeback on --sspr-writeback on --unlock-without-reset on
    log "domains registered, writeback on"
}

forest() {
    : "${DOMAIN:?}" "${ADMIN_DN:?}" "${ADMIN_PASSWORD_FILE:?}"
    local state=/var/lib/writeback/agent
    wait_for_control_plane
    if [[ ! -f $state/state.toml ]]; then
        # The token is the first line of the answer; it goes on through stdin
        # (--stdout: the answer is captured here, not shown or logged).
        local answer
        answer=$(ctl agent enroll-token --domain "$DOMAIN" --stdout)
        printf '%s\n' "${answer%%$'\n'*}" |
            writeback-agent enroll --control-plane "$CP" --token-file - --state-dir "$state"
        log "enrolled the agent of $DOMAIN"
    fi
    writeback-agent permissions grant --admin-dn "$ADMIN_DN" --admin-password-file "$ADMIN_PASSWORD_FILE"
    writeback-agent permissions check
    log "the agent of $DOMAIN is enrolled and its service account holds its rights"
}

idp() {
    local d=$LAB/idp
    [[ -f $LAB/ready ]] || { log "the OpenID provider is not ready (no $LAB/ready)"; exit 1; }
    wait_for_control_plane
    ctl idp issuer add --id demo-idp --url "$(cat "$d/issuer")" \
        --audience "$(cat "$d/audience")" --algorithm RS256 \
        --principal-claim upn --role-claim groups \
        --map writeback-password-admins=password_admin --map writeback-global-admins=global_admin \
        --default-role user --strong-scope "$(cat "$d/strong_scope")" >/dev/null
    ctl idp client add --issuer demo-idp --client-id "$(cat "$d/client_id")" --client-app portal >/dev/null
    log "the tenant trusts $(cat "$d/issuer"); the portal's client is registered"
}

case ${1:-} in
    cloud) cloud ;;
    forest) forest ;;
    idp) idp ;;
    *)
        echo "usage: writeback-setup cloud|forest|idp" >&2
        exit 2
        ;;
esac

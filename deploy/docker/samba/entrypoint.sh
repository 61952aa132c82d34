#!/usr/bin/env bash
# A Samba AD DC in a container: provisions the domain on first start, then runs
# samba in the foreground; on later starts (docker-compose restart, a new
# container on the same volume) it keeps the domain it has.
#
#   samba-dc               provision when needed, then run samba
#   samba-dc healthcheck   exit 0 when an anonymous rootDSE read over LDAPS,
#                          certificate verified, succeeds
#
# Env: DOMAIN (e.g. contoso.test), HOSTNAME_FQDN (the name clients use, e.g.
# dc-contoso; in the LDAPS certificate), ADMIN_PASSWORD_FILE (a docker secret),
# SERVICE_ACCOUNT and SERVICE_PASSWORD_FILE (the agent's service account; it
# gets its rights from `writeback-agent permissions grant`), DEMO_USERS (e.g.
# "alice bob") and DEMO_PASSWORD_FILE (their initial password),
# LOCKOUT_THRESHOLD (bad passwords before lockout; 0 = never). The minimum
# password age is 0, as the seed advises for evaluation. Passwords go through
# Samba's Python bindings from files, never on a command line.
set -euo pipefail
: "${DOMAIN:?}" "${ADMIN_PASSWORD_FILE:?}"
REALM=${DOMAIN^^}
NETBIOS=${REALM%%.*}
FQDN=${HOSTNAME_FQDN:-dc.$DOMAIN}
DATA=/var/lib/samba
CONF=$DATA/etc/smb.conf

log() { printf 'samba-dc: %s\n' "$*"; }

healthcheck() {
    [[ -f $DATA/provisioned ]] || exit 1
    LDAPTLS_CACERT=$DATA/tls/ca.pem LDAPTLS_REQCERT=demand \
        ldapsearch -x -LLL -o nettimeout=3 -H "ldaps://$FQDN" -b "" -s base defaultNamingContext >/dev/null
}

set_password() { # sAMAccountName, password file
    python3 - "$CONF" "$1" "$2" <<'PY'
import sys
from samba.samdb import SamDB
from samba.param import LoadParm
from samba.auth import system_session
lp = LoadParm(); lp.load(sys.argv[1])
db = SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(), lp=lp)
db.setpassword("(sAMAccountName=%s)" % sys.argv[2], open(sys.argv[3]).read().strip(), False)
PY
}

tls_certificate() {
    mkdir -p "$DATA/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=$DOMAIN test CA" -keyout "$DATA/tls/ca.key" -out "$DATA/tls/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$FQDN" \
        -keyout "$DATA/tls/key.pem" -out "$DATA/tls/req.pem" 2>/dev/null
    openssl x509 -req -in "$DATA/tls/req.pem" -CA "$DATA/tls/ca.pem" -CAkey "$DATA/tls/ca.key" \
        -CAcreateserial -days 3650 -out "$DATA/tls/cert.pem" 2>/dev/null \
        -extfile <(printf 'subjectAltName=DNS:%s,DNS:%s\nextendedKeyUsage=serverAuth\n' "$FQDN" "$DOMAIN")
    chmod 600 "$DATA/tls/key.pem" "$DATA/tls/ca.key"
}

provision() {
    log "provisioning $DOMAIN (first start)"
    rm -rf "${DATA:?}"/* # a half-provisioned volume from an interrupted first start
    mkdir -p "$DATA/etc"
    samba-tool domain provision --targetdir="$DATA" --realm="$REALM" --domain="$NETBIOS" \
        --server-role=dc --dns-backend=NONE --use-rfc2307 \
        --option="server services = ldap, cldap, kdc, rpc" >/dev/null
    tls_certificate
    # TLS with our certificate; and the previous password stops working at once
    # (Samba accepts it for NTLM and simple binds for 60 minutes by default).
    sed -i "/\[global\]/a \\\ttls enabled = yes\n\ttls keyfile = $DATA/tls/key.pem\n\ttls certfile = $DATA/tls/cert.pem\n\ttls cafile = $DATA/tls/ca.pem\n\told password allowed period = 0" "$CONF"
    samba-tool domain passwordsettings set -s "$CONF" --min-pwd-age=0 \
        --account-lockout-threshold="${LOCKOUT_THRESHOLD:-0}" >/dev/null
    set_password Administrator "$ADMIN_PASSWORD_FILE"
    if [[ -n ${SERVICE_ACCOUNT:-} ]]; then
        samba-tool user create "$SERVICE_ACCOUNT" --random-password -s "$CONF" >/dev/null
        set_password "$SERVICE_ACCOUNT" "${SERVICE_PASSWORD_FILE:?}"
    fi
    for u in ${DEMO_USERS:-}; do
        samba-tool user create "$u" --random-password -s "$CONF" >/dev/null
        set_password "$u" "${DEMO_PASSWORD_FILE:?}"
    done
    touch "$DATA/provisioned"
    log "provisioned $DOMAIN"
}

case ${1:-run} in
    healthcheck) healthcheck ;;
    run)
        [[ -f $DATA/provisioned ]] || provision
        mkdir -p /shared
        cp "$DATA/tls/ca.pem" "/shared/$DOMAIN-ca.pem"
        log "starting samba for $DOMAIN"
        exec samba -s "$CONF" -i -M single
        ;;
    *)
        echo "usage: samba-dc [run|healthcheck]" >&2
        exit 2
        ;;
esac

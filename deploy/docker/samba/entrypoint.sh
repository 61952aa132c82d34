#!/usr/bin/env bash
# Provisions the domain on first start, then runs samba in the foreground.
# Env: DOMAIN (e.g. contoso.test), HOSTNAME_FQDN (e.g. dc.contoso.test),
# ADMIN_PASSWORD_FILE (a docker secret), DEMO_USERS (e.g. "alice bob"),
# DEMO_PASSWORD_FILE (their initial password).
set -euo pipefail
: "${DOMAIN:?}" "${ADMIN_PASSWORD_FILE:?}"
REALM=${DOMAIN^^}
NETBIOS=${REALM%%.*}
FQDN=${HOSTNAME_FQDN:-dc.$DOMAIN}
DATA=/var/lib/samba
CONF=$DATA/etc/smb.conf
if [[ ! -f $CONF ]]; then
    mkdir -p "$DATA/etc" "$DATA/tls" /shared
    samba-tool domain provision --targetdir="$DATA" --realm="$REALM" --domain="$NETBIOS" \
        --server-role=dc --dns-backend=NONE --use-rfc2307 \
        --option="server services = ldap, cldap, kdc, rpc" >/dev/null
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=$DOMAIN test CA" -keyout "$DATA/tls/ca.key" -out "$DATA/tls/ca.pem"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$FQDN" \
        -keyout "$DATA/tls/key.pem" -out "$DATA/tls/req.pem"
    openssl x509 -req -in "$DATA/tls/req.pem" -CA "$DATA/tls/ca.pem" -CAkey "$DATA/tls/ca.key" \
        -CAcreateserial -days 3650 -out "$DATA/tls/cert.pem" \
        -extfile <(printf 'subjectAltName=DNS:%s,DNS:%s\nextendedKeyUsage=serverAuth\n' "$FQDN" "$DOMAIN")
    chmod 600 "$DATA/tls/key.pem" "$DATA/tls/ca.key"
    sed -i "/\[global\]/a \\\ttls enabled = yes\n\ttls keyfile = $DATA/tls/key.pem\n\ttls certfile = $DATA/tls/cert.pem\n\ttls cafile = $DATA/tls/ca.pem" "$CONF"
    # Passwords go through samba's python bindings from files, never argv.
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
    set_password Administrator "$ADMIN_PASSWORD_FILE"
    for u in ${DEMO_USERS:-}; do
        samba-tool user create "$u" --random-password -s "$CONF" >/dev/null
        set_password "$u" "${DEMO_PASSWORD_FILE:?}"
    done
fi
cp "$DATA/tls/ca.pem" "/shared/$DOMAIN-ca.pem"
exec samba -s "$CONF" -i -M single

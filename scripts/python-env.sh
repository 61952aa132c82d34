#!/usr/bin/env bash
# The Python virtual environment the tests use for a gRPC client written by
# no one here (grpcio, grpcio-status, grpcio-tools, grpcio-reflection) and
# for a real SMTP server (aiosmtpd), from scripts/python-requirements.txt,
# with Debian's /usr/bin/python3
# (python3-venv, installed by scripts/install-deps.sh, which runs this).
#
#   scripts/python-env.sh     # prints the environment's python
#
# It lives in $WRITEBACK_VENV (default ~/.cache/writeback/venv), outside the
# checkout, and is rebuilt only when the requirements change. The tests find
# it the same way and fail, never skip, without it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${WRITEBACK_VENV:-$HOME/.cache/writeback/venv}
REQS=scripts/python-requirements.txt
log() { printf 'python-env: %s\n' "$*" >&2; }

stamp=$(sha256sum "$REQS" | cut -d' ' -f1)
if [[ -x $VENV/bin/python && $(cat "$VENV/.requirements" 2>/dev/null) == "$stamp" ]]; then
    log "up to date: $VENV"
else
    log "creating $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    /usr/bin/python3 -m venv "$VENV"
    # pip trusts the system's CA store (which includes the machine's own
    # anchors, e.g. an egress proxy's), not only the bundle it ships with.
    cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
    cert_opt=()
    [[ -f $cert ]] && cert_opt=(--cert "$cert")
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input "${cert_opt[@]}" -r "$REQS"
    echo "$stamp" >"$VENV/.requirements"
fi
"$VENV/bin/python" -c 'import grpc, grpc_status, grpc_tools, grpc_reflection, aiosmtpd' ||
    { log "error: $VENV cannot import the gRPC and SMTP packages"; exit 1; }
echo "$VENV/bin/python"

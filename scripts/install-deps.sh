#!/usr/bin/env bash
# Install what writeback's tests need on Debian bookworm, as root, non-interactively.
#
#   sudo scripts/install-deps.sh
#
# - Installs every Debian package the stack and the tests use (PACKAGES below:
#   Samba AD with its provisioning schema files, LDAP and Kerberos clients,
#   PostgreSQL, docker-compose, debootstrap for the locally built base image,
#   glewlwyd as the tests' OpenID provider, with sqlite3 to initialise its
#   database, openssl for its RSA signing keys and dbconfig-no-thanks so its
#   package sets up no database itself, and Chromium driven over WebDriver by
#   chromium-driver for the real-browser tests, with libnss3-tools' certutil
#   for the browser's trust store and fonts-dejavu-core so pages render text),
#   running `apt-get update` (once) and `apt-get install` only if one of them is
#   missing. Packages are named explicitly and installed without Recommends:
#   `samba-ad-provision` is only a Recommends of `samba-ad-dc`, yet
#   `samba-tool domain provision` cannot run without it. Running the script
#   again changes nothing and takes about a second.
# - Configures and starts the local PostgreSQL for the storage tests
#   (scripts/postgres.sh: 127.0.0.1:5432, role writeback_test).
# - Creates the Python virtual environment of the tests' independent gRPC
#   client (scripts/python-env.sh: pinned grpcio packages from PyPI, in
#   ~/.cache/writeback/venv).
# - The container tests need a Docker engine. When the machine has none
#   (no `dockerd`), Debian's docker.io is installed (with iptables and
#   nftables, its dependencies) and, on systemd machines, started; an engine
#   from elsewhere (docker-ce) is kept. Without systemd nothing starts it (a
#   container, like the fresh-machine test's, cannot run one): start
#   `dockerd` yourself. The storage driver is the engine's own choice;
#   fuse-overlayfs comes with docker.io for roots that are themselves overlays.
# - The test harness (crates/testkit) runs its own Samba AD DCs as child processes on
#   127.0.0.N with per-DC directories; the distribution's own samba/smbd/nmbd/winbind
#   daemons must not run, because a daemon listening on 0.0.0.0:389/636/88 makes those
#   ports unavailable on every loopback address.
#     * While installing, a temporary /usr/sbin/policy-rc.d (exit 101) keeps the
#       packages' maintainer scripts from starting those daemons, unless one exists.
#     * On systemd machines the units samba-ad-dc, smbd, nmbd and winbind are
#       disabled and stopped (those four only), and so is glewlwyd: the harness
#       runs its own OpenID providers (crates/testkit/src/oidc.rs), and the
#       distribution's unit has no database (see the debconf preseed below).
#     * Without systemd nothing is stopped or killed: if a samba/smbd/nmbd/winbindd
#       process already runs (for example one started by hand from
#       /etc/samba/smb.conf), the script only reports it and exits 3, since the Samba
#       tests would fail against it; stop it yourself (e.g. `/etc/init.d/samba-ad-dc
#       stop`) and re-run.
# - Finally it checks that the tools the harness calls are present.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

PACKAGES=(
    samba samba-ad-dc samba-ad-provision python3-samba winbind # a Samba AD DC
    ldap-utils krb5-user                                       # independent proof: ldapsearch, kinit
    iproute2 procps                                            # ip addr add on lo; pgrep/ps
    postgresql                                                 # the storage tests' second backend
    docker-compose debootstrap ca-certificates binutils        # the compose evaluation: base image, strip
    python3-venv                                               # the tests' Python gRPC client (python-env.sh)
    glewlwyd dbconfig-no-thanks sqlite3 openssl                # test OpenID provider (testkit oidc.rs)
    chromium chromium-driver libnss3-tools fonts-dejavu-core   # real-browser tests (testkit browser.rs)
    curl                                                       # scripts/stack.sh: the portal answers over verified HTTPS
)
# A machine's own engine (docker-ce, or docker.io already there) is kept.
# fuse-overlayfs: the storage driver dockerd falls back to when its root is
# itself an overlay (a VM or container image), as on the project's machines.
command -v dockerd >/dev/null || PACKAGES+=(docker.io fuse-overlayfs)
DISTRO_UNITS=(samba-ad-dc smbd nmbd winbind glewlwyd)

log() { printf 'install-deps: %s\n' "$*"; }
die() {
    printf 'install-deps: error: %s\n' "$*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and manages services)"
command -v dpkg-query >/dev/null || die "this script supports Debian/Ubuntu (dpkg) only"

is_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == "ii"* ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    if is_installed "$pkg"; then
        log "already installed: $pkg"
    else
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} > 0)); then
    policy_rc=/usr/sbin/policy-rc.d
    if [[ ! -e $policy_rc ]]; then
        # Keep maintainer scripts from starting the distro daemons; removed on exit.
        printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
        chmod 0755 "$policy_rc"
        trap 'rm -f "$policy_rc"; log "removed temporary $policy_rc"' EXIT
        log "installed temporary $policy_rc so package scripts start no daemons"
    fi
    # glewlwyd's package would otherwise configure a system database
    # ("Personalized", the default) and fail without one; the harness brings
    # its own. dpkg --configure -a finishes an install interrupted that way.
    echo 'glewlwyd glewlwyd/config_type select No configuration' | debconf-set-selections
    dpkg --configure -a </dev/null || true
    log "installing: ${missing[*]}"
    apt-get update </dev/null
    apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
    log "installed: ${missing[*]}"
else
    log "nothing to install"
fi

if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    for unit in "${DISTRO_UNITS[@]}"; do
        if ! systemctl cat "$unit.service" >/dev/null 2>&1; then
            continue
        fi
        if systemctl is-enabled --quiet "$unit.service" 2>/dev/null ||
            systemctl is-active --quiet "$unit.service" 2>/dev/null; then
            systemctl disable --now "$unit.service"
            log "disabled and stopped distro service $unit"
        else
            log "distro service $unit is already disabled and stopped"
        fi
    done
else
    log "no systemd: no distro services to disable"
fi

if [[ " ${missing[*]} " == *" docker.io "* ]]; then
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl enable --now docker.service
        log "started the Docker engine (docker.io)"
    else
        log "installed docker.io; without systemd, start the engine yourself (dockerd)"
    fi
fi

# Any samba daemon still running now was not started by this script; report only.
running=0
for daemon in samba smbd nmbd winbindd; do
    for pid in $(pidof "$daemon" || true); do
        cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | sed 's/ *$//' || true)
        # samba rewrites its command line ("samba: root process"); test DCs are
        # recognised by their stdout, a log file in the harness's directory.
        stdout=$(readlink "/proc/$pid/fd/1" 2>/dev/null || true)
        case "$cmdline $stdout" in
        *writeback-testkit*)
            log "test DC running (pid $pid), left alone: $cmdline"
            ;;
        *)
            log "WARNING: $daemon already running (pid $pid): $cmdline"
            running=1
            ;;
        esac
    done
done
if ((running)); then
    log "WARNING: a Samba daemon not started by the test harness is running; it was"
    log "WARNING: left alone. It likely holds ports 88/389/636 on all addresses, so the"
    log "WARNING: Samba tests will fail until it is stopped."
    exit 3
fi
log "no distro samba daemons running"

for tool in samba samba-tool kinit ldapsearch ip cp pg_ctlcluster debootstrap glewlwyd sqlite3 openssl \
    chromium chromedriver certutil; do
    command -v "$tool" >/dev/null || die "$tool not found after installation"
done
/usr/bin/python3 -c 'import samba.samdb' </dev/null ||
    die "/usr/bin/python3 cannot import samba (python3-samba missing?)"
# samba-tool domain provision reads the schema from samba-ad-provision's files.
[[ -n $(find /usr/share/samba/setup -name 'AD_DS_Attributes__Windows_Server_2012_R2.ldf' 2>/dev/null) ]] ||
    die "Samba's provisioning schema files are missing (samba-ad-provision)"
# Without any font Chromium renders pages (and screenshots) without text.
[[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] ||
    die "no DejaVu fonts for the browser tests (fonts-dejavu-core missing?)"
# chromium-driver must drive the chromium it came with (same version).
# (The launcher script's own shared-memory check may complain on stderr.)
chromium_version=$(chromium --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1)
driver_version=$(chromedriver --version | grep -o '[0-9][0-9.]*' | head -1)
[[ -n $chromium_version && $chromium_version == "$driver_version" ]] ||
    die "chromium ($chromium_version) and chromedriver ($driver_version) versions differ"
log "ok: $(samba -V)"

"$(dirname "$0")/postgres.sh"
"$(dirname "$0")/python-env.sh" >/dev/null

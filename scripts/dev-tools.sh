#!/usr/bin/env bash
# Installs the Rust tools CI runs besides cargo itself, pinned, from crates.io:
#
#   scripts/dev-tools.sh            # install what is missing; prints the bin dir
#
# - cargo-fuzz (libFuzzer targets in fuzz/, run by scripts/fuzz.sh)
# - cargo-deny (licenses, bans and sources of Cargo.lock, deny.toml)
#
# Each is `cargo install --locked --version <pin>` into a root outside the
# clone, ~/.cache/writeback/tools (WRITEBACK_TOOLS to change it), so a fresh
# clone reuses them and nothing lands in ~/.cargo/bin; a tool already there at
# its pinned version is skipped (the script then takes well under a second).
# The build of a tool goes to its own target directory under the root and is
# deleted afterwards. Cold, both take about 4 minutes on the 2-core machine
# (measured: cargo-fuzz 53 s, cargo-deny 196 s); present, 0.04 s.
#
# Kept apart from install-deps.sh on purpose: that script also runs inside a
# clean Debian container (the fresh-machine test) where there is no Rust.
# Callers put "$(scripts/dev-tools.sh)" — the printed bin dir — on PATH.
set -euo pipefail

ROOT=${WRITEBACK_TOOLS:-$HOME/.cache/writeback/tools}
TOOLS=(
    "cargo-fuzz 0.13.2"
    "cargo-deny 0.20.2"
)

log() { printf 'dev-tools: %s\n' "$*" >&2; }

mkdir -p "$ROOT/bin"
for entry in "${TOOLS[@]}"; do
    read -r name version <<<"$entry"
    bin="$ROOT/bin/$name"
    # `cargo fuzz --version` prints "cargo-fuzz 0.13.2", cargo-deny "cargo-deny 0.20.2".
    sub=${name#cargo-}
    if [ -x "$bin" ] && "$bin" "$sub" --version 2>/dev/null | grep -qxF "$name $version"; then
        continue
    fi
    log "installing $name $version into $ROOT"
    start=$SECONDS
    # The tools' own release profiles ask for fat LTO and one codegen unit
    # (cargo-deny: 4.5 minutes cold on 2 cores); CI runs each for seconds,
    # so they are built with a light optimization instead (config profiles
    # take precedence over a manifest's).
    CARGO_TARGET_DIR="$ROOT/build" cargo install --locked --quiet --force \
        --config profile.release.lto=false --config profile.release.codegen-units=16 \
        --config profile.release.opt-level=1 \
        --root "$ROOT" --version "$version" "$name" >&2
    rm -rf "$ROOT/build"
    log "$name $version installed in $((SECONDS - start)) s"
done
echo "$ROOT/bin"

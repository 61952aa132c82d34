#!/usr/bin/env bash
# Runs every writeback test on a fresh Debian machine (as root):
#
#   sudo scripts/test.sh
#
# 1. installs what the tests use when missing and starts the local PostgreSQL
#    on 127.0.0.1:5432 (scripts/install-deps.sh, scripts/postgres.sh; the
#    storage tests run against SQLite *and* PostgreSQL and fail loudly
#    without it) and the Python environment of the tests' independent gRPC
#    client (scripts/python-env.sh);
# 2. checks formatting and lints (cargo fmt --check, clippy -D warnings);
# 3. runs the whole workspace's tests with cargo-nextest (cargo test when
#    nextest is absent), including the end-to-end tests against real Samba
#    AD domain controllers, the fresh-machine test (install-deps.sh in a
#    clean Debian container) and the docker-compose tests, which need the
#    machine's Docker engine (their base image and the images that need no
#    binaries are made beside the build: scripts/compose.sh prebuild; the
#    longest tests start first, .config/nextest.toml); beside them, at the
#    lowest priority, installs
#    the pinned tools (scripts/dev-tools.sh, into ~/.cache/writeback/tools)
#    and builds the fuzz targets;
# 4. checks Cargo.lock against deny.toml (`cargo deny check licenses bans
#    sources`: no advisories, whose database cannot be fetched here) and runs
#    the fuzz gate (scripts/fuzz.sh: every target replays its committed
#    corpus, then a fixed-seed search counted in runs, so its outcome
#    depends only on the committed code and corpus).
#
# The build cache lives outside the checkout (CARGO_TARGET_DIR, default
# ~/.cache/writeback/target) so a fresh clone does not rebuild everything;
# the Debian base root file system and apt's downloads for the container
# tests are cached under ~/.cache/writeback, images in the engine.
#
# Each step's time is printed as it ends and again in a summary at the end
# (the README's "Continuous integration" gives the cold and warm figures).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'test: %s\n' "$*"; }

TIMES=()
step_start=$SECONDS
step_name=""
# Ends the step under way (recording its time) and starts the one named.
step() {
    if [ -n "$step_name" ]; then
        TIMES+=("$(printf '%-28s %5d s' "$step_name" $((SECONDS - step_start)))")
        log "$step_name: $((SECONDS - step_start)) s"
    fi
    step_name=$1
    step_start=$SECONDS
}
summary() {
    step ""
    log "time per step:"
    printf 'test:   %s\n' "${TIMES[@]}"
    log "total: $SECONDS s"
}
bg_pid=""
images_pid=""
on_exit() {
    local status=$?
    [ -z "$bg_pid" ] || kill -- -"$bg_pid" 2>/dev/null || true
    [ -z "$images_pid" ] || kill -- -"$images_pid" 2>/dev/null || true
    [ -z "$step_name" ] || summary
    exit "$status"
}
trap on_exit EXIT

step "install (install-deps.sh)"
scripts/install-deps.sh

# install-deps.sh ran scripts/postgres.sh: PostgreSQL answers on 127.0.0.1:5432
# for the tests' default WRITEBACK_TEST_POSTGRES_URL.

# The container tests' base image and the images that need no binaries
# (debootstrap and apt: minutes of download and unpacking on a cold machine,
# little CPU) are made while cargo builds; the tests wait for them. In its
# own session, like the tools below.
IMAGES_LOG=$(mktemp /tmp/writeback-ci-images.XXXXXX)
setsid -w bash -c 'start=$SECONDS; scripts/compose.sh prebuild; status=$?; echo "images: $((SECONDS - start)) s"; exit $status' \
    >"$IMAGES_LOG" 2>&1 </dev/null &
images_pid=$!

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/writeback/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# A one-shot build of a fresh clone gains nothing from incremental data, and
# each clone's path would add gigabytes of it to the shared cache.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

step "fmt and clippy"
log "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The pinned tools and the fuzz build cost about 15 minutes of CPU on a cold
# machine and nothing on a warm one. They run beside the test suite, at the
# lowest CPU and I/O priority, on the cores the tests leave idle while they
# wait for domain controllers, containers and browsers; the deny check and
# the fuzz gate, which need them, run after the suite. (In its own session,
# so a failed suite stops it with its children.)
BG_LOG="$CARGO_TARGET_DIR/ci-tools-and-fuzz-build.log"
mkdir -p "$CARGO_TARGET_DIR"
setsid -w nice -n 19 ionice -c3 bash -c \
    'start=$SECONDS; scripts/dev-tools.sh >/dev/null && scripts/fuzz.sh --build; status=$?; echo "background: $((SECONDS - start)) s"; exit $status' \
    >"$BG_LOG" 2>&1 </dev/null &
bg_pid=$!

step "tests (build and run)"
if ! wait "$images_pid"; then
    cat "$IMAGES_LOG" >&2
    log "making the container images failed (log above)"
    exit 1
fi
images_pid=""
log "container images made beside the build: $(sed -n 's/^images: //p' "$IMAGES_LOG")"
if cargo nextest --version >/dev/null 2>&1; then
    log "cargo nextest run --workspace (tools and fuzz build beside it: $BG_LOG)"
    cargo nextest run --workspace --locked --profile ci
else
    log "cargo-nextest not found; using cargo test"
    cargo test --workspace --locked
fi

step "tools and fuzz build, after the tests"
if ! wait "$bg_pid"; then
    cat "$BG_LOG" >&2
    log "installing the tools or building the fuzz targets failed (log above)"
    exit 1
fi
log "tools and fuzz build beside the tests: $(sed -n 's/^background: //p' "$BG_LOG")"
TOOLS=$(scripts/dev-tools.sh)
step "deny"
log "cargo deny check licenses bans sources"
"$TOOLS/cargo-deny" deny check --hide-inclusion-graph licenses bans sources
step "fuzz gate"
log "fuzz gate: committed corpus replayed, fixed-seed search"
scripts/fuzz.sh

bg_pid=""
log "all tests passed"
summary
step_name=""

#!/usr/bin/env bash
# Builds and runs writeback's libFuzzer targets (fuzz/):
#
#   scripts/fuzz.sh                      # the CI gate: deterministic, every target
#   scripts/fuzz.sh token sd             # the gate, chosen targets
#   scripts/fuzz.sh --build              # build the targets only (test.sh runs
#                                        # this beside the test suite)
#   scripts/fuzz.sh --long               # open-ended search, FUZZ_SECONDS (300) each
#   FUZZ_SECONDS=3600 scripts/fuzz.sh --long operation
#
# The gate (what scripts/test.sh and so CI run) depends only on the committed
# code and corpus, so it passes or fails the same way on every machine:
#   1. replay: every input committed for the target runs once through it:
#      fuzz/corpus/<target>/ (the hand-made seeds, and every input that once
#      found a bug, named regression-*) and fuzz/minimized/<target>/ (what
#      long runs found, minimized to the inputs that each add coverage);
#   2. a fixed-seed search: FUZZ_RUNS (default 500000) runs from that corpus,
#      named in sorted order, with libFuzzer's -seed=FUZZ_SEED (default 1),
#      counted in runs, not seconds, writing new inputs only to a scratch
#      directory emptied first, with ASLR off, no timed corpus re-read and
#      fixed hash seeds in the code under test (fuzz/fixed-random.c). Two
#      runs end with the same coverage and corpus, input for input: no
#      clock, no directory order and no machine-local cache steers it.
#
# --long is the open-ended search a person runs (not CI): FUZZ_SECONDS per
# target, a random seed, and a working corpus outside the clone
# ($CARGO_TARGET_DIR/fuzz/corpus/<target>, kept between runs so each starts
# where the last stopped). A crash, leak, out-of-memory or timeout stops it
# and prints the input and a minimized copy (libFuzzer -minimize_crash); fix
# the bug and commit the minimized input as fuzz/corpus/<target>/regression-…
# so the gate replays it from then on. To grow the committed corpus from a
# long run, merge its working corpus into fuzz/minimized (only inputs that
# add coverage to what is there are kept):
#   "$BIN/<target>" -set_cover_merge=1 fuzz/minimized/<target> "$CARGO_TARGET_DIR/fuzz/corpus/<target>"
#
# How it builds on stable Rust: cargo-fuzz (scripts/dev-tools.sh installs it)
# with `--sanitizer none`. cargo-fuzz asks nightly only for sanitizers
# (-Zsanitizer) and -Zbuild-std; the coverage instrumentation libFuzzer needs
# (-Cpasses=sancov-module and -Cllvm-args=-sanitizer-coverage-*) are stable
# codegen flags, and libfuzzer-sys compiles libFuzzer itself with the
# machine's C++ compiler. What is lost is AddressSanitizer, which finds
# memory errors in unsafe code: writeback forbids unsafe code, so a panic, an
# arithmetic overflow (debug assertions and overflow checks are on), an
# out-of-memory or a hang is what the targets can hit, and libFuzzer catches
# each of those without a sanitizer. No nightly toolchain can be fetched on
# the project's machines; RUSTC_BOOTSTRAP is not needed.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'fuzz: %s\n' "$*"; }

LONG=0
BUILD_ONLY=0
case ${1:-} in
    --long) LONG=1; shift ;;
    --build) BUILD_ONLY=1; shift ;;
esac

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/writeback/target}
SECONDS_EACH=${FUZZ_SECONDS:-300}
RUNS=${FUZZ_RUNS:-500000}
SEED=${FUZZ_SEED:-1}
TOOLS=$(scripts/dev-tools.sh)
export PATH="$TOOLS:$PATH"
OUT="$CARGO_TARGET_DIR/fuzz"
BIN="$OUT/x86_64-unknown-linux-gnu/release"
# Limits of one input: a hang or a blow-up is a finding, in both modes.
LIMITS=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)

if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo fuzz list --fuzz-dir fuzz)
fi

start=$SECONDS
log "building ${#TARGETS[@]} targets (cargo fuzz build --sanitizer none)"
build() {
    cargo fuzz build --fuzz-dir fuzz --sanitizer none --target-dir "$OUT" "$@" \
        >"$OUT.build.log" 2>&1 || { cat "$OUT.build.log" >&2; exit 1; }
}
mkdir -p "$OUT"
if [ $# -gt 0 ]; then
    for t in "${TARGETS[@]}"; do build "$t"; done
else
    build
fi
log "built in $((SECONDS - start)) s"
[ "$BUILD_ONLY" = 0 ] || exit 0

# The gate's fixed randomness (fuzz/fixed-random.c says why), and a check
# that this machine lets a process turn ASLR off for itself: without either,
# the search would not be the same on every run, so the gate refuses to run.
SHIM="$OUT/fixed-random.so"
if [ "$LONG" = 0 ]; then
    cc -shared -fPIC -O2 -o "$SHIM" fuzz/fixed-random.c
    if ! setarch -R true 2>/dev/null; then
        log "setarch -R fails here (personality(ADDR_NO_RANDOMIZE) refused): the gate's search cannot be made repeatable"
        exit 1
    fi
fi

stat_of() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }

# The end of a failed run's log, the input that failed and how to replay it.
report() {
    local t=$1 runlog=$2 artifacts=$3
    printf '\nfuzz: %s FAILED; the end of its log (%s):\n' "$t" "$runlog" >&2
    grep -v '^#[0-9]' "$runlog" | tail -40 >&2
    local input
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$runlog" | tail -1)
    if [ -z "$input" ]; then
        input=$(sed -n 's/^Running: \(.*\)$/\1/p' "$runlog" | tail -1)
    fi
    [ -n "$input" ] || return 0
    printf 'fuzz: %s: the failing input: %s\nfuzz:   replay: %s %s\n' \
        "$t" "$input" "$BIN/$t" "$input" >&2
    if [ "$LONG" = 1 ] && [ -f "$input" ]; then
        local small="$artifacts/minimized-$(basename "$input")"
        "$BIN/$t" -minimize_crash=1 -runs=20000 -exact_artifact_path="$small" \
            "$input" >"$runlog.minimize" 2>&1 || true
        if [ -f "$small" ]; then
            printf 'fuzz:   minimized (%s bytes): %s\nfuzz:   after the fix: cp %s fuzz/corpus/%s/regression-<what-it-found>\n' \
                "$(stat -c %s "$small")" "$small" "$small" "$t" >&2
        fi
    fi
}

# The gate: replay the committed corpus, then a fixed-seed search from it.
# The inputs are named in a list sorted by name (-seed_inputs), not read
# from the directory: the order readdir gives differs between file systems,
# and the order of the corpus steers the search.
gate() {
    local t=$1 work="$OUT/gate/$t"
    local runlog="$OUT/logs/$t.gate.log" artifacts="$OUT/gate-artifacts/$t"
    rm -rf "$work" "$artifacts"
    mkdir -p "$work" "$artifacts" "$(dirname "$runlog")"
    local inputs=()
    mapfile -t inputs < <(find "fuzz/corpus/$t" "fuzz/minimized/$t" -type f 2>/dev/null | LC_ALL=C sort)
    if [ ${#inputs[@]} -eq 0 ] || printf '%s\n' "${inputs[@]}" | grep -q ,; then
        log "$t: fuzz/corpus/$t must hold inputs, with no comma in their names"
        return 1
    fi
    # Each input once, as a test case: a finding names the file it came from.
    if ! "$BIN/$t" "${LIMITS[@]}" "${inputs[@]}" >"$runlog" 2>&1; then
        report "$t" "$runlog" "$artifacts"
        return 1
    fi
    (IFS=,; printf '%s' "${inputs[*]}") >"$work.list"
    # The scratch directory is the only corpus directory: libFuzzer writes the
    # inputs it finds there, and it is emptied before every run. What else
    # would steer the search differently in each process is held still: the
    # addresses of code (ASLR, which libFuzzer's table of compared values is
    # keyed by), the periodic re-read of the corpus directory (a timer,
    # -reload=0) and the hash seeds of the code under test (fixed-random.so).
    if ! LD_PRELOAD="$SHIM" setarch -R "$BIN/$t" -seed="$SEED" -runs="$RUNS" -reload=0 \
        -seed_inputs="@$work.list" "${LIMITS[@]}" \
        -artifact_prefix="$artifacts/" "$work" >>"$runlog" 2>&1; then
        report "$t" "$runlog" "$artifacts"
        return 1
    fi
    # Where the search ended: the same on every run (compare two logs).
    local ended
    ended=$(grep -a 'DONE' "$runlog" | tail -1 | sed -n 's/.*\(cov: [0-9]* ft: [0-9]* corp: [^ ]*\).*/\1/p')
    log "$t: ok, ${#inputs[@]} committed inputs replayed, $RUNS runs from seed $SEED, ended at $ended"
}

# The open-ended search: a random seed for FUZZ_SECONDS, from the committed
# corpus and the machine's working corpus.
long() {
    local t=$1 corpus="$OUT/corpus/$t" artifacts="$OUT/artifacts/$t"
    local runlog="$OUT/logs/$t.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$runlog")"
    if ! "$BIN/$t" -max_total_time="$SECONDS_EACH" "${LIMITS[@]}" \
        -artifact_prefix="$artifacts/" "$corpus" "fuzz/corpus/$t" "fuzz/minimized/$t" >"$runlog" 2>&1; then
        report "$t" "$runlog" "$artifacts"
        return 1
    fi
    log "$t: ok, $(stat_of number_of_executed_units "$runlog") runs in $SECONDS_EACH s ($(stat_of average_exec_per_sec "$runlog")/s), working corpus $(find "$corpus" -type f | wc -l) inputs"
}

failed=()
for t in "${TARGETS[@]}"; do
    if [ "$LONG" = 1 ]; then
        long "$t" || failed+=("$t")
    else
        gate "$t" || failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    log "FAILED: ${failed[*]}"
    exit 1
fi
if [ "$LONG" = 1 ]; then
    log "all ${#TARGETS[@]} targets searched $SECONDS_EACH s each without a finding ($((SECONDS - start)) s in all)"
else
    log "gate passed: ${#TARGETS[@]} targets, committed corpus replayed, $RUNS runs each from seed $SEED ($((SECONDS - start)) s in all)"
fi

#!/usr/bin/env bash
# Builds and runs writeback's libFuzzer targets (fuzz/), each for a bounded time:
#
#   scripts/fuzz.sh                 # every target, FUZZ_SECONDS (default 15) each
#   FUZZ_SECONDS=600 scripts/fuzz.sh sd ledger   # longer, chosen targets
#
# scripts/test.sh runs it with the default, so CI fuzzes every target on every
# run; run it with a large FUZZ_SECONDS to fuzz for longer.
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
#
# Corpus: the seeds kept in the repository (fuzz/corpus/<target>, read only)
# plus a working corpus outside the clone ($CARGO_TARGET_DIR/fuzz/corpus,
# kept between runs on a machine, so each run starts where the last stopped).
# A crash, leak, out-of-memory or timeout fails the run and prints the path of
# the input that reproduces it ($CARGO_TARGET_DIR/fuzz/artifacts/<target>/)
# and the command that replays it; add a reduced copy of it to
# fuzz/corpus/<target>/ with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'fuzz: %s\n' "$*"; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/writeback/target}
SECONDS_EACH=${FUZZ_SECONDS:-15}
TOOLS=$(scripts/dev-tools.sh)
export PATH="$TOOLS:$PATH"
OUT="$CARGO_TARGET_DIR/fuzz"
BIN="$OUT/x86_64-unknown-linux-gnu/release"

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

failed=()
for t in "${TARGETS[@]}"; do
    corpus="$OUT/corpus/$t"
    artifacts="$OUT/artifacts/$t"
    runlog="$OUT/logs/$t.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$runlog")"
    before=$(find "$artifacts" -type f | wc -l)
    # The working corpus first: libFuzzer writes new inputs only there.
    if "$BIN/$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "$corpus" "fuzz/corpus/$t" >"$runlog" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$runlog")
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$runlog")
        log "$t: ok, ${runs:-?} runs in ${SECONDS_EACH} s (${rate:-?}/s), corpus $(find "$corpus" -type f | wc -l) inputs"
    else
        failed+=("$t")
        printf '\nfuzz: %s FAILED; the end of its log (%s):\n' "$t" "$runlog" >&2
        grep -v '^#[0-9]' "$runlog" | tail -40 >&2
        mapfile -t found < <(ls -t "$artifacts" 2>/dev/null | head -n $(( $(find "$artifacts" -type f | wc -l) - before )))
        for f in "${found[@]}"; do
            printf 'fuzz: %s: reproducing input %s\nfuzz:   replay: %s %s\n' \
                "$t" "$artifacts/$f" "$BIN/$t" "$artifacts/$f" >&2
        done
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    log "FAILED: ${failed[*]}"
    exit 1
fi
log "all ${#TARGETS[@]} targets ran ${SECONDS_EACH} s each without a finding ($((SECONDS - start)) s in all)"

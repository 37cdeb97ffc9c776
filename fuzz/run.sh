#!/usr/bin/env bash
# Runs cargo-fuzz targets for a fixed time each and prints their throughput.
#
#   fuzz/run.sh SECONDS [TARGET...]    (default: wal_decode wal_ops branch_ops)
#
# Each target runs for SECONDS (-max_total_time) on its corpus
# fuzz/corpus/<target> (which grows), single-threaded, under `nice`; its
# libFuzzer output goes to fuzz/artifacts/<target>.log. Crashing inputs land in
# fuzz/artifacts/<target>/; minimize one with `cargo +nightly fuzz tmin
# <target> <file>` and copy the result to fuzz/regressions/<target>/ so that
# `cargo test` replays it. branch_ops is built with `--features branch` (it
# links Lance). Environment: FUZZ_ARGS adds libFuzzer flags, FUZZ_NICE sets
# the niceness (default 19), FUZZ_SANITIZER the sanitizer (default none: the
# targets are safe Rust, and AddressSanitizer makes them several times
# slower; use address for unsafe code), CARGO_BUILD_JOBS defaults to 1.
set -uo pipefail
cd "$(dirname "$0")"

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: fuzz/run.sh SECONDS [TARGET...]" >&2
    exit 2
fi
secs=$1
shift
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(wal_decode wal_ops branch_ops)
fi
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
sanitizer=${FUZZ_SANITIZER:-none}

summary=()
failed=0
for t in "${targets[@]}"; do
    features=()
    if [[ $t == branch_ops ]]; then
        features=(--features branch)
    fi
    mkdir -p "corpus/$t" "artifacts/$t"
    log="artifacts/$t.log"
    echo "== $t: building"
    if ! nice -n "${FUZZ_NICE:-19}" cargo +nightly fuzz build -s "$sanitizer" "${features[@]}" "$t"; then
        summary+=("$t: build failed")
        failed=1
        continue
    fi
    echo "== $t: fuzzing for ${secs}s (log: fuzz/$log)"
    start=$(date +%s)
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    nice -n "${FUZZ_NICE:-19}" cargo +nightly fuzz run -s "$sanitizer" "${features[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=20 ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    wall=$(($(date +%s) - start))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -n1 | grep -o '[0-9]*$')
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -n1 | grep -o '[0-9]*$')
    line="$t: ${execs:-?} executions, ${rate:-?} execs/s, ${wall}s wall"
    if [[ $rc -ne 0 ]]; then
        failed=1
        line+=", FAILED (exit $rc): see fuzz/$log and fuzz/artifacts/$t/"
        tail -n 40 "$log"
    else
        corpus=$(find "corpus/$t" -type f | wc -l)
        line+=", no crash, corpus ${corpus} files"
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $failed

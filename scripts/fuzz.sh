#!/usr/bin/env bash
# Runs fuzz targets (host/fuzz) under libFuzzer with cargo-fuzz, each for a
# bounded time, and prints a table of what each did. Installs cargo-fuzz
# (pinned) when it is missing.
#
# Usage: scripts/fuzz.sh SECONDS [TARGET...]   (or `just fuzz SECONDS TARGET...`)
#
# Each target starts from its committed corpus and past findings
# (host/fuzz/corpus/T, host/fuzz/regressions/T), which it only reads; what
# it discovers goes to a working corpus under the build directory. A
# crash, panic, hang (-timeout) or runaway memory (-rss_limit_mb) is written
# to host/fuzz/artifacts/T/: fix it, then move the input to
# host/fuzz/regressions/T/ so every `cargo test` replays it.
#
# Built with `--sanitizer none`, which stable Rust supports: the host is
# safe Rust over wasmtime, and AddressSanitizer needs a nightly compiler.
# The instrumented build is separate from the normal one and, cold, takes
# as long as a first host build.

set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
((${#targets[@]})) || targets=(config upload http metrics)

cargo_fuzz_version=0.13.2
if [[ $(cargo fuzz --version 2>/dev/null) != "cargo-fuzz $cargo_fuzz_version" ]]; then
    echo "fuzz: installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

target_dir="${CARGO_TARGET_DIR:-$repo/target}/fuzz"
work="$target_dir/work"
summary=()
status=0
for target in "${targets[@]}"; do
    mkdir -p "$work/corpus/$target" "host/fuzz/artifacts/$target" "host/fuzz/regressions/$target"
    log="$work/$target.log"
    echo "fuzz: $target for ${seconds} s (log: $log)"
    set +e
    cargo fuzz run --fuzz-dir host/fuzz --target-dir "$target_dir" --features libfuzzer --sanitizer none \
        "$target" "$work/corpus/$target" "host/fuzz/corpus/$target" "host/fuzz/regressions/$target" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="host/fuzz/artifacts/$target/" >"$log" 2>&1
    code=$?
    set -e
    runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" | tail -1)
    coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corpus=$(find "$work/corpus/$target" -type f | wc -l)
    findings=$(find "host/fuzz/artifacts/$target" -type f | wc -l)
    if ((code != 0)); then
        status=1
        tail -n 40 "$log"
    fi
    summary+=("| $target | ${seconds} s | ${runs:-?} | ${coverage:-?} | $corpus | $findings | $code |")
done

echo
echo "| target | time | inputs run | coverage (edges) | corpus found | artifacts | exit |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${summary[@]}"
exit "$status"

#!/bin/sh
# Runs every fuzz target for SECONDS (default 30) on the stable toolchain, starting from the
# committed seeds. A crash stops with the reproducer path under artifacts/TARGET/.
#   fuzz/run-all.sh [SECONDS] [extra libFuzzer flags…]
set -eu
cd "$(dirname "$0")"
secs=${1:-30}
[ $# -gt 0 ] && shift
export RUSTC_BOOTSTRAP=1
for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t"
    echo "== $t (${secs}s)"
    cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -print_final_stats=1 "$@"
done

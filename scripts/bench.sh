#!/usr/bin/env bash
# Benchmarks: builds the runner in release mode and runs scenarios, writing one JSON report
# per scenario to ./bench-reports (see docs/benchmarks.md).
#   scripts/bench.sh                      every scenario, 2M rows
#   scripts/bench.sh run --rows 500000 log-append-read
#   scripts/bench.sh list
#   RIVVEN_BENCH_FEATURES=lakehouse scripts/bench.sh run lakehouse   (iceberg, delta-lake)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh
features=()
[ -n "${RIVVEN_BENCH_FEATURES:-}" ] && features=(--features "$RIVVEN_BENCH_FEATURES")
cargo build -q --release --locked -p rivven-bench "${features[@]}"
[ $# -gt 0 ] || set -- run
exec "$CARGO_TARGET_DIR/release/rivven-bench" "$@"

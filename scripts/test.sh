#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust:
#   1. installs what is missing (scripts/install-tools.sh: apt packages, tansu and s3s-fs
#      built once with cargo, the Python readers venv), all cached under $HOME/.cache/rivven;
#   2. cargo fmt --check, no modules importing each other (scripts/module-cycles.py) and
#      cargo clippy -D warnings;
#   3. starts every test service privately on loopback (rivven-services), runs every test
#      against them, and stops them.
# With CI=true, a service that cannot start fails the run and is named.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
log() { printf '\n==> %s\n' "$*"; }

bash scripts/install-tools.sh
# shellcheck source=scripts/env.sh
. scripts/env.sh
# shellcheck source=scripts/services.sh
. scripts/services.sh __lib
echo "target dir: $CARGO_TARGET_DIR; RUSTFLAGS=${RUSTFLAGS:-}; installs took $(( $(date +%s) - t0 ))s"

t1=$(date +%s)
log "cargo fmt --check"
cargo fmt --all --check
log "module import cycles"
python3 scripts/module-cycles.py
log "cargo clippy"
cargo clippy --workspace --all-targets --locked --features lakehouse,rivven-bench/lakehouse -- -D warnings

log "starting test services"
run_dir=$(mktemp -d)
# --watch-pid: the services stop by themselves if this script is killed.
svc_pid=$(start_services "" "$run_dir/services.json" "$run_dir/services.log" $$)
trap 'stop_services "$svc_pid"; rm -rf "$run_dir"' EXIT
cat "$run_dir/services.log"
export RIVVEN_TEST_SERVICES="$run_dir/services.json"

log "cargo test"
cargo test --workspace --locked --features lakehouse,rivven-bench/lakehouse
echo "test command finished in $(( $(date +%s) - t0 ))s ($(( $(date +%s) - t1 ))s after installs)"

#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs what is missing,
# then runs formatting, lints and every test. Build output and tools are cached under
# $HOME/.cache/rivven (outside the clone) and reused by later runs.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# Tools: rustfmt and clippy components; mold (a faster linker) and curl from Debian.
for c in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
    log "installing rustup component $c"
    rustup component add "$c"
  fi
done
missing=()
command -v mold >/dev/null 2>&1 || missing+=(mold)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing ${missing[*]} (apt)"
  if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"; } >/dev/null 2>&1; then
    echo "warning: could not install ${missing[*]}; continuing without" >&2
  fi
fi

# shellcheck source=scripts/env.sh
. scripts/env.sh
echo "target dir: $CARGO_TARGET_DIR; RUSTFLAGS=${RUSTFLAGS:-}"

start=$(date +%s)
log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
cargo test --workspace --locked
echo "test command finished in $(( $(date +%s) - start ))s (after installs)"

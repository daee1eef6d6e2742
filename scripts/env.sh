# Shared build environment for every script: caches live outside the clone so that a
# fresh clone (CI) reuses compiled dependencies and installed tools.
# shellcheck shell=bash
export RIVVEN_CACHE="${RIVVEN_CACHE:-$HOME/.cache/rivven}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RIVVEN_CACHE/target}"
if command -v mold >/dev/null 2>&1 && [ -z "${RUSTFLAGS:-}" ]; then
  export RUSTFLAGS="-C link-arg=-fuse-ld=mold"
fi

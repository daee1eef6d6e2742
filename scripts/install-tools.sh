#!/usr/bin/env bash
# Installs what the tests and benchmarks need when it is missing, and only then:
#   - Debian packages: mold, curl, PostgreSQL 15, MariaDB, mosquitto, NATS, chromium;
#   - cargo tools, built once into $RIVVEN_CACHE/tools/bin: tansu (Kafka-protocol broker),
#     s3s-fs (S3 server that checks SigV4 signatures) and rustberg (Iceberg REST catalog);
#   - npm packages into $RIVVEN_CACHE/tools/npm: azurite (Azure Blob emulator) and
#     playwright-core (drives Debian's chromium in the status-page test; it never downloads
#     a browser);
#   - a Python venv at $RIVVEN_CACHE/venv with independent readers: pyarrow, duckdb,
#     pyiceberg, deltalake, fastavro, cramjam (snappy, zstd, lz4 frames), backports.zstd (fastavro's zstd codec),
#     DuckDB 1.5.5 with its iceberg, delta, avro and httpfs extensions from their offline wheels
#     (pinned together: an extension loads only into its own DuckDB version), and moto's
#     server (AWS Glue and S3 mocks), and ADBC's Flight SQL driver (the Flight SQL client).
# Everything lands outside the clone and is reused by later runs.
#
# Usage: scripts/install-tools.sh [apt|cargo|npm|python ...]   (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh

log() { printf '\n==> %s\n' "$*"; }

TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
S3S_FS_VERSION="${S3S_FS_VERSION:-0.14.1}"
RUSTBERG_VERSION="${RUSTBERG_VERSION:-0.3.0}"
AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
PLAYWRIGHT_VERSION="${PLAYWRIGHT_VERSION:-1.65.1}"
PY_PACKAGES=(pyarrow duckdb==1.5.5 duckdb-extension-iceberg==1.5.5 duckdb-extension-delta==1.5.5 duckdb-extension-avro==1.5.5 duckdb-extension-httpfs==1.5.5 pytz "pyiceberg[sql-sqlite,sql-postgres,pyarrow,glue]" "moto[server]" deltalake fastavro cramjam backports.zstd azure-storage-blob adbc-driver-flightsql==1.13.0 adbc-driver-manager==1.13.0 confluent-kafka)

install_apt() {
  for c in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
      log "installing rustup component $c"
      rustup component add "$c"
    fi
  done
  local missing=()
  command -v mold >/dev/null 2>&1 || missing+=(mold)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  [ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
  command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
  command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v script >/dev/null 2>&1 || missing+=(bsdutils)
  if [ ${#missing[@]} -eq 0 ]; then return; fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: missing ${missing[*]} and no apt-get here" >&2
    return
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing ${missing[*]} (apt)"
  $sudo apt-get update -qq >/dev/null
  # Do not start the packaged services: tests run private instances on free ports.
  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# cargo install into the cache; built in its own target dir so it never races the
# workspace build.
cargo_tool() { # name version bin [extra args...]
  local name=$1 version=$2 bin=$3
  shift 3
  local root="$RIVVEN_CACHE/tools"
  if [ -x "$root/bin/$bin" ] && [ -f "$root/.$name-$version" ]; then return; fi
  log "building $name $version with cargo install (cached in $root; first time only)"
  local t0
  t0=$(date +%s)
  # LTO off and parallel codegen: release builds of the tools in minutes on two cores.
  env -u RUSTFLAGS CARGO_TARGET_DIR="$RIVVEN_CACHE/tools-target" \
    CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo install "$name" --version "$version" --locked --root "$root" "$@"
  touch "$root/.$name-$version"
  echo "$name built in $(( $(date +%s) - t0 ))s"
}

install_cargo() {
  cargo_tool tansu "$TANSU_VERSION" tansu --features dynostore
  cargo_tool s3s-fs "$S3S_FS_VERSION" s3s-fs --features binary
  cargo_tool rustberg "$RUSTBERG_VERSION" rustberg --no-default-features --features cli
  rm -rf "$RIVVEN_CACHE/tools-target"
}

install_npm() {
  local root="$RIVVEN_CACHE/tools"
  if [ -x "$root/bin/azurite-blob" ] && [ -f "$root/.azurite-$AZURITE_VERSION" ] &&
    [ -f "$root/.playwright-core-$PLAYWRIGHT_VERSION" ]; then return; fi
  log "installing azurite $AZURITE_VERSION and playwright-core $PLAYWRIGHT_VERSION with npm (into $root/npm)"
  # playwright-core has no browser download step: the tests launch Debian's chromium.
  npm install --silent --no-audit --no-fund --prefix "$root/npm" \
    "azurite@$AZURITE_VERSION" "playwright-core@$PLAYWRIGHT_VERSION"
  mkdir -p "$root/bin"
  ln -sf "../npm/node_modules/.bin/azurite-blob" "$root/bin/azurite-blob"
  touch "$root/.azurite-$AZURITE_VERSION" "$root/.playwright-core-$PLAYWRIGHT_VERSION"
}

install_python() {
  local venv="$RIVVEN_CACHE/venv"
  local stamp="$venv/.packages"
  local want="${PY_PACKAGES[*]}"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
  log "creating the Python readers venv at $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  echo "$want" >"$stamp"
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(apt cargo npm python)
for p in "${parts[@]}"; do
  case "$p" in
    apt) install_apt ;;
    cargo) install_cargo ;;
    npm) install_npm ;;
    python) install_python ;;
    *) echo "unknown part: $p (apt, cargo, npm, python)" >&2; exit 2 ;;
  esac
done

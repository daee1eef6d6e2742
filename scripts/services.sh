#!/usr/bin/env bash
# Test services for humans: the same private loopback instances the test command uses.
#   scripts/services.sh start [postgres,mariadb,...]   start in the background
#   scripts/services.sh stop                           stop them (by PID)
#   scripts/services.sh status                         print where they listen
# After `start`, run tests against them with
#   export RIVVEN_TEST_SERVICES=$HOME/.cache/rivven/services/services.json
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh
dir="$RIVVEN_CACHE/services"
file="$dir/services.json"
pidfile="$dir/pid"
mkdir -p "$dir"

# Start `rivven-services up` in the background and wait until it has written $2 (or died).
# Prints the supervisor's PID.
start_services() { # only file log [watch-pid]
  local only=$1 file=$2 log=$3 args=()
  [ -n "$only" ] && args=(--only "$only")
  [ -n "${4:-}" ] && args+=(--watch-pid "$4")
  cargo build -q --locked -p rivven-testkit --bin rivven-services >&2
  rm -f "$file"
  "$CARGO_TARGET_DIR/debug/rivven-services" up --file "$file" "${args[@]}" >"$log" 2>&1 &
  local pid=$!
  while [ ! -f "$file" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" || true
      cat "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "$pid"
}

stop_services() { # pid
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

case "${1:-}" in
  start)
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "already running (pid $(cat "$pidfile")); $0 stop first" >&2
      exit 1
    fi
    pid=$(start_services "${2:-}" "$file" "$dir/log")
    echo "$pid" >"$pidfile"
    cat "$dir/log" >&2
    echo "export RIVVEN_TEST_SERVICES=$file"
    ;;
  stop)
    [ -f "$pidfile" ] && stop_services "$(cat "$pidfile")"
    rm -f "$pidfile"
    ;;
  status)
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then cat "$file"; else echo "not running"; fi
    ;;
  __lib) ;; # sourced by scripts/test.sh for the functions above
  *)
    echo "usage: $0 start [names,...] | stop | status" >&2
    exit 2
    ;;
esac

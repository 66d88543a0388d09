#!/bin/bash
# bench/syscalls.sh [ROUNDS] [CALLS]: added cost per syscall on a getppid loop, in one run,
# rounds interleaved, median of ROUNDS; each tool attached and settled before measuring.
# Conditions: nothing; the floors (an empty program on raw_tp sys_enter, raw_tp sys_exit and
# tp_btf sys_exit); ksight serve (default collectors); libbpf-tools syscount; bpftrace.
# Prints a Markdown table. Run as root, on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-5}
CALLS=${2:-2000000}
T=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT
scripts/deps --bench
# The peers need tracefs at its usual place (ksight mounts its own privately when it is absent).
[ -d /sys/kernel/tracing/events ] || mount -t tracefs nodev /sys/kernel/tracing
gcc -O2 -o "$T/getppid" bench/getppid.c
cargo build --release --locked -q -p ksight
cargo build --release --locked -q -p ksight-bpf --example floor
KSIGHT=target/release/ksight FLOOR=target/release/examples/floor

# start_tool NAME: starts the tool in the background, waits until it is attached.
start_tool() {
  case $1 in
    none) return ;;
    floor_enter_raw_tp) $FLOOR probe_raw_tp > "$T/out" 2>&1 & ;;
    floor_exit_raw_tp) $FLOOR probe_raw_tp_exit > "$T/out" 2>&1 & ;;
    floor_exit_tp_btf) $FLOOR probe_tp_btf_exit > "$T/out" 2>&1 & ;;
    ksight) $KSIGHT serve --web.listen-address 127.0.0.1:9719 --log warn > "$T/out" 2>&1 & ;;
    syscount) stdbuf -oL syscount > "$T/out" 2>&1 & ;;
    bpftrace) bpftrace -e 'tracepoint:raw_syscalls:sys_enter { @[comm] = count(); }' > "$T/out" 2>&1 & ;;
  esac
  PID=$!
  local marker
  case $1 in
    floor_*) marker=attached ;; ksight) marker=HOOK ;; syscount) marker=Tracing ;; bpftrace) marker=Attaching ;;
  esac
  for _ in $(seq 300); do grep -q "$marker" "$T/out" 2>/dev/null && break; sleep 0.1; done
  grep -q "$marker" "$T/out" || { echo "bench: $1 did not start: $(cat "$T/out")" >&2; exit 1; }
  settle "$PID" "$([ "$1" = bpftrace ] && echo 3 || echo 1)" "$T/out"
}
# Background jobs of a script ignore SIGINT: TERM, then KILL if a tool does not leave.
stop_tool() {
  [ "$1" = none ] && return
  kill -TERM "$PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
}

CONDS=(none floor_enter_raw_tp floor_exit_raw_tp floor_exit_tp_btf ksight syscount bpftrace)
for round in $(seq "$ROUNDS"); do
  for c in "${CONDS[@]}"; do
    start_tool "$c"
    "$T/getppid" "$CALLS" >> "$T/$c.ns"
    stop_tool "$c"
  done
  echo "round $round done" >&2
done

base=$(median "$T/none.ns")
floor=$(median "$T/floor_exit_tp_btf.ns"); syscount=$(median "$T/syscount.ns"); ksight=$(median "$T/ksight.ns")
echo "| attached | ns/syscall | added ns |"
echo "|---|---:|---:|"
for c in "${CONDS[@]}"; do
  m=$(median "$T/$c.ns")
  printf '| %s | %.1f | %s |\n' "$c" "$m" "$(awk -v m="$m" -v b="$base" 'BEGIN{ if (m==b) print "—"; else printf "%+.1f", m-b }')"
done
awk -v k="$ksight" -v f="$floor" -v s="$syscount" -v b="$base" 'BEGIN {
  printf "\nksight added / floor of its hook (tp_btf sys_exit): %.2f (target <= 1.3)\n", (k-b)/(f-b)
  printf "ksight added / syscount added: %.2f (target <= 0.6)\n", (k-b)/(s-b) }'

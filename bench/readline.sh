#!/bin/bash
# bench/readline.sh [ROUNDS] [LINES]: the cost per line of `ksight trace readline` (a uprobe
# and a uretprobe on readline(), a record per line) against libbpf-tools bashreadline (a
# uretprobe; it keeps only comm "bash" in the kernel, so it pays the probes but sends nothing
# here). Workload: bench/rlloop.c reads LINES lines with readline() of libreadline.so from
# memory (no syscall per character). ksight filters on the workload's comm and writes its
# records to a file. Rounds interleaved, median of ROUNDS; each tool attached and settled
# first. Prints a Markdown table. Run as root, on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-5}
LINES=${2:-200000}
T=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT
scripts/deps --bench
gcc -O2 -Wall -o "$T/rlloop" bench/rlloop.c -lreadline
seq 1 "$LINES" | sed 's/^/echo line /' > "$T/in"
LIB=$(ldd "$T/rlloop" | awk '/libreadline/ {print $3}')
cargo build --release --locked -q -p ksight
KSIGHT=$PWD/target/release/ksight

start_tool() {
  : > "$T/out"; : > "$T/err"; PID=
  case $1 in
    none) return ;;
    ksight) $KSIGHT trace readline --comm rlloop > "$T/out" 2> "$T/err" & ;;
    bashreadline) bashreadline -s "$LIB" > "$T/out" 2> "$T/err" & ;;
  esac
  PID=$!
  if [ "$1" = ksight ]; then
    for _ in $(seq 300); do grep -q TIME "$T/out" 2>/dev/null && break; sleep 0.1; done
    grep -q TIME "$T/out" || { echo "bench: ksight did not start: $(cat "$T/err")" >&2; exit 1; }
  fi
  # bashreadline's output to a file is block-buffered: give it the time libbpf tools take.
  settle "$PID" "$(case $1 in ksight) echo 1 ;; *) echo 3 ;; esac)" "$T/err"
}

stop_tool() {
  [ -z "$PID" ] && return
  kill -INT "$PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
}

TOOLS=(none ksight bashreadline)
declare -A NS DELIVERED
for r in $(seq "$ROUNDS"); do
  for tool in "${TOOLS[@]}"; do
    start_tool "$tool"
    read -r lines ns < <("$T/rlloop" < "$T/in")
    stop_tool
    [ "$lines" = "$LINES" ] || { echo "bench: rlloop read $lines of $LINES lines" >&2; exit 1; }
    NS[$tool]+="$ns "
    [ "$tool" = ksight ] && DELIVERED[$tool]+="$(grep -c ' rlloop ' "$T/out" || true) "
  done
done
base=$(echo "${NS[none]}" | median)
echo "| tool | ns/line | added ns/line | lines reported |"
echo "|---|---:|---:|---|"
for tool in "${TOOLS[@]}"; do
  m=$(echo "${NS[$tool]}" | median)
  case $tool in
    none) echo "| nothing | $m | — | — |" ;;
    ksight) echo "| ksight trace readline --comm rlloop | $m | +$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.0f", a - b}') | $(echo "${DELIVERED[ksight]}" | median) of $LINES |" ;;
    bashreadline) echo "| bashreadline -s libreadline (keeps comm bash only) | $m | +$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.0f", a - b}') | 0 (by design) |" ;;
  esac
done

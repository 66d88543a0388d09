#!/bin/bash
# bench/trace.sh [ROUNDS] [OPENS] [EXECS]: ksight trace against libbpf-tools opensnoop /
# execsnoop and bpftrace one-liners on the same workloads, in one run, rounds interleaved,
# median of ROUNDS; each tool attached and settled before measuring, its output to a file.
# Workloads: a loop of OPENS failed openat calls (one event each), and a loop of EXECS
# fork+exec+wait of a copy of /bin/true. For each tool: ns per operation and the added ns,
# events delivered out of those generated (zero loss?), the tracer's CPU time per event (from
# the scheduler's nanosecond run time of its threads, cpu_ns in bench/lib.sh) and its peak
# RSS. The floor is an empty tp_btf program on sys_exit (ksight's open hook).
# Prints Markdown tables. Run as root, on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-5}
OPENS=${2:-200000}
EXECS=${3:-2000}
T=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT
scripts/deps --bench
# The peers need tracefs at its usual place (ksight mounts its own privately when it is absent).
[ -d /sys/kernel/tracing/events ] || mount -t tracefs nodev /sys/kernel/tracing
gcc -O2 -o "$T/openloop" bench/openloop.c
gcc -O2 -o "$T/execloop" bench/execloop.c
cp /bin/true "$T/benchtrue"
cargo build --release --locked -q -p ksight
cargo build --release --locked -q -p ksight-bpf --example floor
KSIGHT=$PWD/target/release/ksight FLOOR=$PWD/target/release/examples/floor

# start_tool NAME: starts the tool in the background (output to $T/out), waits until attached.
start_tool() {
  : > "$T/out"; : > "$T/err"
  case $1 in
    none) PID=; return ;;
    floor) $FLOOR probe_tp_btf_exit > "$T/out" 2> "$T/err" & ;;
    ksight_open) $KSIGHT trace open --comm openloop > "$T/out" 2> "$T/err" & ;;
    opensnoop) opensnoop -n openloop > "$T/out" 2> "$T/err" & ;;
    bpftrace_open) bpftrace -e 'tracepoint:syscalls:sys_enter_openat /comm == "openloop"/ { printf("%d %s %s\n", pid, comm, str(args->filename)); }' > "$T/out" 2> "$T/err" & ;;
    ksight_exec) $KSIGHT trace exec > "$T/out" 2> "$T/err" & ;;
    execsnoop) execsnoop > "$T/out" 2> "$T/err" & ;;
    bpftrace_exec) bpftrace -e 'tracepoint:syscalls:sys_enter_execve { printf("%d %s %s\n", pid, comm, str(args->filename)); }' > "$T/out" 2> "$T/err" & ;;
  esac
  PID=$!
  local marker
  case $1 in
    floor) marker=attached ;; ksight_*) marker=TIME ;; bpftrace_*) marker=Attaching ;;
    # their output to a file is block-buffered (stdbuf -oL would add a write per event):
    # libbpf-tools attach within about a second; give them three.
    opensnoop | execsnoop) settle "$PID" 3 "$T/err"; return ;;
  esac
  for _ in $(seq 300); do grep -q "$marker" "$T/out" 2>/dev/null && break; sleep 0.1; done
  grep -q "$marker" "$T/out" || { echo "bench: $1 did not start: $(cat "$T/out" "$T/err")" >&2; exit 1; }
  settle "$PID" "$(case $1 in bpftrace_*) echo 3 ;; *) echo 1 ;; esac)" "$T/out" "$T/err"
}

# stop_tool NAME: SIGINT (tools drain and print their summary), then TERM/KILL if needed.
stop_tool() {
  [ -z "$PID" ] && return
  kill -INT "$PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
}

# delivered NAME: events of the workload's loop the tool printed (not the loop's own start).
delivered() {
  case $1 in
    ksight_open | opensnoop | bpftrace_open) grep -c 'ksight-bench' "$T/out" || true ;;
    ksight_exec) grep -c 'benchtrue a b c' "$T/out" || true ;;
    # execsnoop shows only argv[0] of these execs on kernel 6.18: count by its PCOMM column
    execsnoop) grep -c '^benchtrue ' "$T/out" || true ;;
    bpftrace_exec) grep -c ' execloop .*benchtrue$' "$T/out" || true ;;
    *) echo - ;;
  esac
}

# measure NAME WORKLOAD: one round; appends ns/op, delivered, cpu ns/event, peak RSS KiB.
measure() {
  local name=$1 work=$2 ns t0 t1 rss generated
  start_tool "$name"
  [ -n "$PID" ] && t0=$(cpu_ns "$PID")
  if [ "$work" = open ]; then
    ns=$("$T/openloop" "$OPENS"); generated=$OPENS
  else
    ns=$("$T/execloop" "$EXECS" "$T/benchtrue"); generated=$EXECS
  fi
  if [ -n "$PID" ]; then
    sleep 0.5 # let the reader catch up before its CPU is read
    t1=$(cpu_ns "$PID")
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
  fi
  stop_tool "$name"
  echo "$ns" >> "$T/${work}_$name.all"
  [ -n "$PID" ] || return 0
  echo "$(delivered "$name")" >> "$T/$name.delivered"
  awk -v a="$t0" -v b="$t1" -v n="$generated" 'BEGIN {printf "%.0f\n", (b-a)/n}' >> "$T/$name.cpu"
  echo "$rss" >> "$T/$name.rss"
  cat "$T/err" >> "$T/$name.stderr"
}

OPEN_CONDS=(none floor ksight_open opensnoop bpftrace_open)
EXEC_CONDS=(none ksight_exec execsnoop bpftrace_exec)
for round in $(seq "$ROUNDS"); do
  for c in "${OPEN_CONDS[@]}"; do measure "$c" open; done
  for c in "${EXEC_CONDS[@]}"; do measure "$c" exec; done
  echo "round $round done" >&2
done

table() { # table WORKLOAD GENERATED CONDS…
  local work=$1 generated=$2; shift 2
  local base; base=$(median "$T/${work}_none.all")
  echo
  echo "| $work loop | ns/op | added ns/event | delivered (worst round) of $generated | tracer CPU ns/event | tracer peak RSS |"
  echo "|---|---:|---:|---:|---:|---:|"
  for c in "$@"; do
    local m; m=$(median "$T/${work}_$c.all")
    local added; added=$(awk -v m="$m" -v b="$base" 'BEGIN{ if (m==b) print "—"; else printf "%+.0f", m-b }')
    local d=- cpu=- rss=-
    if [ -f "$T/$c.delivered" ]; then
      d=$(minimum "$T/$c.delivered"); cpu=$(median "$T/$c.cpu"); rss="$(median "$T/$c.rss" | awk '{print int($1 / 1024)}') MB"
    fi
    printf '| %s | %.0f | %s | %s | %s | %s |\n' "$c" "$m" "$added" "$d" "$cpu" "$rss"
  done
}
table open "$OPENS" "${OPEN_CONDS[@]}"
table exec "$EXECS" "${EXEC_CONDS[@]}"
b=$(median "$T/open_none.all"); k=$(median "$T/open_ksight_open.all"); o=$(median "$T/open_opensnoop.all")
awk -v k="$k" -v o="$o" -v b="$b" -v r="$(awk -v k="$k" 'BEGIN{printf "%.0f", 1e9/k}')" 'BEGIN {
  printf "\nksight added / opensnoop added (failed opens): %.2f (target <= 0.2)\n", (k-b)/(o-b)
  printf "ksight on the failed-open loop: %s events/s delivered\n", r }'
echo "ksight lost (all rounds):" "$(grep -ho '[0-9]* lost' "$T/ksight_open.stderr" "$T/ksight_exec.stderr" | awk '{s+=$1} END {print s+0}')"
echo "opensnoop lost (all rounds):" "$(grep -hoi 'lost [0-9]*' "$T/opensnoop.stderr" "$T/opensnoop.delivered" 2>/dev/null | awk '{s+=$2} END {print s+0}')"

#!/bin/bash
# bench/collectors.sh [ROUNDS] [SCALE]: added cost per event of the tcp, sched, block, memory,
# signals and page_faults collectors, in one run, rounds interleaved, median of ROUNDS; each
# tool attached and settled before measuring. SCALE (default 1, may be a fraction) multiplies
# the events per measurement.
# Workloads (bench/*.c): pingpong (pipe ping-pong pinned to one CPU: per round trip = 2
# context switches + 2 wakeups), connect (loopback connect + accept + close: per connection),
# dio (O_DIRECT 4 KiB reads from a loop device on tmpfs: per I/O), signal (kill(SIGUSR1) to a
# child that ignores it: per signal), faults (mmap + touch + munmap: per page fault).
# Conditions per workload: nothing; the floor (empty tp_btf programs on every hook of the
# collector); ksight serve with the default collectors, and without the workload's collector
# (page_faults, opt-in: the defaults plus it); the peers computing the same figure.
# A collector's cost = (defaults) - (defaults without it) on its workload.
# Prints one Markdown table per workload, then a summary. Run as root, on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-5}
SCALE=${2:-1}
PORT=9731
T=$(mktemp -d)
IMG=
LOOP=
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null || true
  [ -n "$IMG" ] && rm -f "$IMG"
  rm -rf "$T"
}
trap cleanup EXIT
scripts/deps --bench
# The peers need tracefs at its usual place (ksight mounts its own privately when it is absent).
[ -d /sys/kernel/tracing/events ] || mount -t tracefs nodev /sys/kernel/tracing
for w in pingpong connect dio signal faults; do gcc -O2 -Wall -o "$T/$w" "bench/$w.c"; done
cargo build --release --locked -q -p ksight
cargo build --release --locked -q -p ksight-bpf --example floor
KSIGHT=target/release/ksight FLOOR=target/release/examples/floor
# A loop device on tmpfs keeps block I/O CPU-bound.
IMG=$(mktemp /dev/shm/ksight-bench.XXXXXX)
truncate -s 64M "$IMG"
LOOP=$(losetup -f --show "$IMG") || { echo "bench: losetup failed (no loop devices?)" >&2; exit 1; }

# Events per measurement (each >= 0.5 s on an idle 2-core machine at SCALE 1).
n() { awk -v n="$1" -v s="$SCALE" 'BEGIN { printf "%d", n * s }'; }
N_SCHED=$(n 60000) N_TCP=$(n 15000) N_BLOCK=$(n 20000) N_SIGNALS=$(n 400000) N_FAULTS=$(n 300000)
# BENCH_WORKLOADS="sched tcp" measures only those (default: all five).
read -r -a WORKLOADS <<< "${BENCH_WORKLOADS:-sched tcp block signals faults}"
run_workload() {
  case $1 in
    sched) "$T/pingpong" "$N_SCHED" "${PINGPONG_CPU:-0}" ;;
    tcp) "$T/connect" "$N_TCP" ;;
    block) "$T/dio" "$LOOP" "$N_BLOCK" ;;
    signals) "$T/signal" "$N_SIGNALS" ;;
    faults) "$T/faults" "$N_FAULTS" ;;
  esac
}

DEFAULTS=syscalls,process,files,tcp,sched,block,memory,signals
BT_RUNQLAT='tracepoint:sched:sched_wakeup,tracepoint:sched:sched_wakeup_new { @qtime[args->pid] = nsecs; }
tracepoint:sched:sched_switch { if (args->prev_state == 0) { @qtime[args->prev_pid] = nsecs; }
  $ns = @qtime[args->next_pid]; if ($ns) { @usecs = hist((nsecs - $ns) / 1000); }
  delete(@qtime[args->next_pid]); }'
BT_TCP='tracepoint:sock:inet_sock_set_state { @[args->oldstate, args->newstate] = count(); }'
BT_BIO='tracepoint:block:block_rq_issue { @start[args->dev, args->sector] = nsecs; }
tracepoint:block:block_rq_complete /@start[args->dev, args->sector]/ {
  @usecs[args->dev] = hist((nsecs - @start[args->dev, args->sector]) / 1000);
  delete(@start[args->dev, args->sector]); }'
BT_SIGNALS='tracepoint:signal:signal_generate { @[args->comm, args->sig] = count(); }'
BT_FAULTS='tracepoint:exceptions:page_fault_user { @[comm] = count(); }'

# Each tool: the workloads it is measured on, and a label for the tables.
declare -A ON LABEL
ON[none]="${WORKLOADS[*]}";      LABEL[none]="nothing"
ON[floor_sched]=sched;           LABEL[floor_sched]="floor: empty tp_btf on sched_switch, sched_wakeup, sched_wakeup_new"
ON[floor_tcp]=tcp;               LABEL[floor_tcp]="floor: empty tp_btf on inet_sock_set_state, tcp_retransmit_skb, tcp_send_reset, tcp_receive_reset"
ON[floor_block]=block;           LABEL[floor_block]="floor: empty tp_btf on block_rq_issue, block_rq_complete"
ON[floor_signals]=signals;       LABEL[floor_signals]="floor: empty tp_btf on signal_generate"
ON[floor_page_faults]=faults;    LABEL[floor_page_faults]="floor: empty tp_btf on page_fault_user"
ON[ks]="${WORKLOADS[*]}";        LABEL[ks]="**ksight serve (default collectors)**"
ON[ks_no_sched]=sched;           LABEL[ks_no_sched]="ksight serve, defaults without sched"
ON[ks_no_tcp]=tcp;               LABEL[ks_no_tcp]="ksight serve, defaults without tcp"
ON[ks_no_block]=block;           LABEL[ks_no_block]="ksight serve, defaults without block"
ON[ks_no_signals]=signals;       LABEL[ks_no_signals]="ksight serve, defaults without signals"
ON[ks_no_memory]=faults;         LABEL[ks_no_memory]="ksight serve, defaults without memory"
ON[ks_page_faults]=faults;       LABEL[ks_page_faults]="ksight serve, defaults + page_faults"
ON[runqlat]=sched;               LABEL[runqlat]="libbpf-tools \`runqlat\`"
ON[bt_runqlat]=sched;            LABEL[bt_runqlat]="bpftrace runqlat (wakeup/switch histogram)"
ON[tcplife]=tcp;                 LABEL[tcplife]="libbpf-tools \`tcplife\` (output to a file)"
ON[tcpstates]=tcp;               LABEL[tcpstates]="libbpf-tools \`tcpstates\` (output to a file)"
ON[bt_tcp]=tcp;                  LABEL[bt_tcp]="bpftrace \`@[oldstate, newstate] = count()\` on inet_sock_set_state"
ON[biolatency]=block;            LABEL[biolatency]="libbpf-tools \`biolatency -D\`"
ON[bt_biolatency]=block;         LABEL[bt_biolatency]="bpftrace biolatency (issue/complete histogram by dev)"
ON[bt_signals]=signals;          LABEL[bt_signals]="bpftrace \`@[args->comm, args->sig] = count()\` on signal_generate"
ON[bt_faults]=faults;            LABEL[bt_faults]="bpftrace \`@[comm] = count()\` on page_fault_user"
TOOLS=(none floor_sched floor_tcp floor_block floor_signals floor_page_faults
  ks ks_no_sched ks_no_tcp ks_no_block ks_no_signals ks_no_memory ks_page_faults
  runqlat bt_runqlat tcplife tcpstates bt_tcp biolatency bt_biolatency bt_signals bt_faults)

# start_tool NAME: starts the tool in the background, waits until it is attached.
start_tool() {
  local out="$T/out" marker
  case $1 in
    none) return ;;
    floor_sched) $FLOOR probe_floor_sched_switch probe_floor_sched_wakeup probe_floor_sched_wakeup_new > "$out" 2>&1 & ;;
    floor_tcp) $FLOOR probe_floor_inet_sock_set_state probe_floor_tcp_retransmit_skb \
      probe_floor_tcp_send_reset probe_floor_tcp_receive_reset > "$out" 2>&1 & ;;
    floor_block) $FLOOR probe_floor_block_rq_issue probe_floor_block_rq_complete > "$out" 2>&1 & ;;
    floor_signals) $FLOOR probe_floor_signal_generate > "$out" 2>&1 & ;;
    floor_page_faults) $FLOOR probe_floor_page_fault_user > "$out" 2>&1 & ;;
    ks) $KSIGHT serve --web.listen-address 127.0.0.1:$PORT --log warn > "$out" 2>&1 & ;;
    ks_page_faults) $KSIGHT serve --web.listen-address 127.0.0.1:$PORT --log warn \
      --collectors "$DEFAULTS,page_faults" > "$out" 2>&1 & ;;
    ks_no_*) $KSIGHT serve --web.listen-address 127.0.0.1:$PORT --log warn \
      "--no-collector.${1#ks_no_}" > "$out" 2>&1 & ;;
    runqlat) stdbuf -oL runqlat > "$out" 2>&1 & ;;
    tcplife) stdbuf -oL tcplife > "$out" 2>&1 & ;;
    tcpstates) stdbuf -oL tcpstates > "$out" 2>&1 & ;;
    biolatency) stdbuf -oL biolatency -D > "$out" 2>&1 & ;;
    bt_runqlat) bpftrace -e "$BT_RUNQLAT" > "$out" 2>&1 & ;;
    bt_tcp) bpftrace -e "$BT_TCP" > "$out" 2>&1 & ;;
    bt_biolatency) bpftrace -e "$BT_BIO" > "$out" 2>&1 & ;;
    bt_signals) bpftrace -e "$BT_SIGNALS" > "$out" 2>&1 & ;;
    bt_faults) bpftrace -e "$BT_FAULTS" > "$out" 2>&1 & ;;
    *) echo "bench: unknown tool $1" >&2; exit 1 ;;
  esac
  PID=$!
  case $1 in
    floor_*) marker=attached ;; ks*) marker=HOOK ;; runqlat|biolatency) marker=Tracing ;;
    tcplife) marker=LADDR ;; tcpstates) marker=SKADDR ;; bt_*) marker=Attaching ;;
  esac
  for _ in $(seq 300); do grep -q "$marker" "$out" 2>/dev/null && break; sleep 0.1; done
  grep -q "$marker" "$out" || { echo "bench: $1 did not start: $(cat "$out")" >&2; exit 1; }
  settle "$PID" "$(case $1 in bt_*) echo 3 ;; *) echo 1 ;; esac)" "$out"
}
# Background jobs of a script ignore SIGINT: TERM, then KILL if a tool does not leave.
stop_tool() {
  [ "$1" = none ] && return
  kill -TERM "$PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
  for t in "${TOOLS[@]}"; do
    on=""
    for w in ${ON[$t]}; do [[ " ${WORKLOADS[*]} " == *" $w "* ]] && on+="$w "; done
    [ -n "$on" ] || continue
    start_tool "$t"
    for w in $on; do
      ns=$(run_workload "$w") || { echo "bench: workload $w failed under $t" >&2; exit 1; }
      echo "$ns" >> "$T/$w.$t.ns"
    done
    stop_tool "$t"
  done
  echo "round $round of $ROUNDS done ($(cut -d' ' -f1 /proc/loadavg) load)" >&2
done

# m WORKLOAD TOOL: the median ns/event.
m() { median "$T/$1.$2.ns"; }
declare -A FLOOR_OF=([sched]=floor_sched [tcp]=floor_tcp [block]=floor_block [signals]=floor_signals [faults]=floor_page_faults)
declare -A UNIT=([sched]="round trip (2 context switches + 2 wakeups)" [tcp]="connection (6 state transitions, 1 reset sent, 1 received)"
  [block]="4 KiB O_DIRECT read" [signals]="signal" [faults]="page fault")
for w in "${WORKLOADS[@]}"; do
  base=$(m "$w" none); floor=$(m "$w" "${FLOOR_OF[$w]}")
  echo
  echo "$w: ns per ${UNIT[$w]}, median of $ROUNDS"
  echo
  echo "| condition | ns/event | added ns/event | added / floor |"
  echo "|---|---:|---:|---:|"
  for t in "${TOOLS[@]}"; do
    [[ " ${ON[$t]} " == *" $w "* ]] || continue
    v=$(m "$w" "$t")
    awk -v l="${LABEL[$t]}" -v v="$v" -v b="$base" -v f="$floor" -v none="$([ "$t" = none ] && echo 1 || echo 0)" 'BEGIN {
      if (none) { printf "| %s | %.1f | — | — |\n", l, v; exit }
      printf "| %s | %.1f | %+.1f | %.2f |\n", l, v, v-b, (f-b) ? (v-b)/(f-b) : 0 }'
  done
done

# Summary: the collector's own cost on its workload, its floor, the peers.
declare -A PEERS=([sched]="runqlat bt_runqlat" [tcp]="tcplife tcpstates bt_tcp" [block]="biolatency bt_biolatency"
  [signals]=bt_signals [page_faults]=bt_faults [memory]="")
declare -A PEER_NAME=([runqlat]=runqlat [bt_runqlat]="bpftrace runqlat" [tcplife]=tcplife [tcpstates]=tcpstates
  [bt_tcp]="bpftrace count" [biolatency]="biolatency -D" [bt_biolatency]="bpftrace biolatency" [bt_signals]="bpftrace count"
  [bt_faults]="bpftrace count")
echo
echo "Summary: added ns per event (median of $ROUNDS); a collector's cost = defaults − defaults without it"
echo
echo "| collector (workload) | its cost | floor of its hooks | all defaults | peer: added (collector / peer) |"
echo "|---|---:|---:|---:|---|"
for c in sched tcp block signals memory page_faults; do
  case $c in memory|page_faults) w=faults ;; *) w=$c ;; esac
  [[ " ${WORKLOADS[*]} " == *" $w "* ]] || continue
  base=$(m "$w" none); all=$(m "$w" ks)
  case $c in
    page_faults) cost=$(awk -v a="$(m "$w" ks_page_faults)" -v b="$all" 'BEGIN{print a-b}') ;;
    *) cost=$(awk -v a="$all" -v b="$(m "$w" "ks_no_$c")" 'BEGIN{print a-b}') ;;
  esac
  if [ "$c" = memory ]; then floor="— (no hook on this path)"
  else floor=$(awk -v f="$(m "$w" "${FLOOR_OF[$w]}")" -v b="$base" 'BEGIN{printf "%+.1f", f-b}'); fi
  peers=""
  for p in ${PEERS[$c]}; do
    peers+=$(awk -v n="${PEER_NAME[$p]}" -v v="$(m "$w" "$p")" -v b="$base" -v c="$cost" 'BEGIN {
      printf "%s %+.1f (%.2f×); ", n, v-b, (v-b) ? c/(v-b) : 0 }')
  done
  printf '| %s (%s) | %+.1f | %s | %+.1f | %s |\n' "$c" "$w" "$cost" "$floor" \
    "$(awk -v a="$all" -v b="$base" 'BEGIN{print a-b}')" "${peers%; }"
done
echo
echo "Events per measurement: sched $N_SCHED, tcp $N_TCP, block $N_BLOCK, signals $N_SIGNALS, faults $N_FAULTS; load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

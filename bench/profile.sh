#!/bin/bash
# bench/profile.sh [ROUNDS] [WORK]: ksight profile against `perf record -F 99 -a -g` + `perf
# script` and bpftrace's `profile:hz:99` with stacks counted in the kernel (the libbpf-tools
# `profile` of the issue: Debian's libbpf-tools package does not ship it), all at 99 Hz on
# every CPU, on the same CPU-bound workload (crates/ksight/tests/workloads/chain.c, the
# profile tests' own, run as `chain -n WORK`: WORK calls of main -> outer -> middle -> leaf,
# pinned to CPU 0). Rounds alternate the tools (none first).
# ksight runs twice: as it is (--unwind auto: the frame-pointer workload is judged to use its
# frame pointers, counted in the kernel) and with --unwind dwarf (every sample of every
# process copied to user space and unwound from .eh_frame: the cost of the path binaries
# without frame pointers take), with the workload built with frame pointers and without.
# The floor is an empty perf_event program on the same cpu-clock events at 99 Hz
# (crates/bpf/examples/floor.rs): what any BPF profiler costs the workload before it does
# anything. The slowdowns are given against no profiler and against the floor.
# TOOLS="none floor ksight …" picks some (bpftrace's stop takes ~50 s a round here).
# Per tool, medians of ROUNDS: the workload's time (elapsed, and its own CPU time, which the
# other tasks of a shared machine do not inflate) and its slowdown against no profiler; the
# profiler's CPU time (user + system, its own process, and perf script for perf) per sample;
# its peak RSS; the time from the stop signal to the symbolized output; for ksight and
# bpftrace the BPF program's own ns per run (BPF statistics; perf samples without BPF). Then
# the agreement of the top 10 functions by self samples (idle excluded) with perf's, both
# recording the same run. Prints Markdown tables. `bench/profile.sh 0` runs the agreement only.
# Run as root, on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-10}
WORK=${2:-400}
T=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT
scripts/deps --bench
gcc -O2 -fno-omit-frame-pointer -o "$T/chain" crates/ksight/tests/workloads/chain.c
gcc -O2 -fomit-frame-pointer -o "$T/chain-nofp" crates/ksight/tests/workloads/chain.c
cargo build --release --locked -q -p ksight
cargo build --release --locked -q -p ksight-bpf --example floor
KSIGHT=$PWD/target/release/ksight FLOOR=$PWD/target/release/examples/floor
read -r -a TOOLS <<< "${TOOLS:-none floor ksight ksight-dwarf ksight-nofp perf bpftrace}"
# The workload each tool profiles: ksight-nofp is ksight (auto) on the build without frame
# pointers, judged to need stack copies.
workload() { case $1 in ksight-nofp) echo "$T/chain-nofp" ;; *) echo "$T/chain" ;; esac; }

# start_tool NAME: starts it under /usr/bin/time (CPU, peak RSS), waits until it samples.
start_tool() {
  : > "$T/err"
  case $1 in
    none) PID=; return ;;
    floor) /usr/bin/time -f '%U %S %M' -o "$T/time" env FLOOR_HZ=99 "$FLOOR" probe_perf_event > "$T/err" 2>&1 & ;;
    ksight | ksight-nofp) /usr/bin/time -f '%U %S %M' -o "$T/time" "$KSIGHT" profile -F 99 -o "$T/$1.folded" 2> "$T/err" & ;;
    ksight-dwarf) /usr/bin/time -f '%U %S %M' -o "$T/time" "$KSIGHT" profile -F 99 --unwind dwarf -o "$T/$1.folded" 2> "$T/err" & ;;
    perf) /usr/bin/time -f '%U %S %M' -o "$T/time" perf record -F 99 -a -g -o "$T/perf.data" 2> "$T/err" > /dev/null & ;;
    bpftrace) /usr/bin/time -f '%U %S %M' -o "$T/time" bpftrace -e 'profile:hz:99 { @[kstack, ustack, comm] = count(); }' > "$T/bpftrace.out" 2> "$T/err" & ;;
  esac
  TIMEPID=$!
  for _ in $(seq 100); do PID=$(pgrep -P "$TIMEPID" || true); [ -n "$PID" ] && break; sleep 0.05; done
  local marker
  case $1 in ksight*) marker=sampling ;; bpftrace) marker=Attaching ;; floor) marker=attached ;; perf) marker= ;; esac
  if [ -n "$marker" ]; then
    for _ in $(seq 300); do grep -q "$marker" "$T/err" "$T/bpftrace.out" 2>/dev/null && break; sleep 0.1; done
  fi
  settle "$PID" 2 "$T/err"
}

# bpftrace's perf_event program: its ns per run from the kernel's BPF statistics (on only for
# its rounds; ksight turns them on for its own program itself).
bpftrace_bpf_ns() {
  bpftool prog show -j | python3 -c '
import json, sys
progs = [p for p in json.load(sys.stdin) if p.get("type") == "perf_event" and p.get("run_cnt")]
cnt = sum(p["run_cnt"] for p in progs); ns = sum(p["run_time_ns"] for p in progs)
print(ns // cnt if cnt else 0)'
}

# stop_tool NAME: SIGINT, then waits for the symbolized output; prints the seconds it took.
stop_tool() {
  local t0 t1
  t0=$(date +%s.%N)
  kill -INT "$PID"
  wait "$TIMEPID" || true
  [ "$1" = perf ] && /usr/bin/time -f '%U %S %M' -o "$T/time.script" perf script -i "$T/perf.data" -F comm,ip,sym > "$T/perf.txt" 2> /dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

samples() {
  case $1 in
    ksight*) grep -o 'samples=[0-9]*' "$T/err" | cut -d= -f2 ;;
    perf) awk 'NF && !/^[[:space:]]/ {n++} END {print n + 0}' "$T/perf.txt" ;;
    bpftrace) awk -F': ' '/^@\[/ || /^\]:/ {} /\]: [0-9]+$/ {n += $NF} END {print n + 0}' "$T/bpftrace.out" ;;
  esac
}

# ROUNDS=0: the agreement only.
for round in $(seq "$ROUNDS"); do
  for tool in "${TOOLS[@]}"; do
    [ "$tool" = bpftrace ] && { stats_was=$(sysctl -n kernel.bpf_stats_enabled); sysctl -qw kernel.bpf_stats_enabled=1; }
    start_tool "$tool"
    read -r wall cpu_ms < <(taskset -c 0 "$(workload "$tool")" -n "$WORK")
    echo "$wall" >> "$T/$tool.ms"; echo "$cpu_ms" >> "$T/$tool.cpu_ms"
    [ "$tool" = none ] && continue
    [ "$tool" = floor ] && { kill "$PID"; wait "$TIMEPID" || true; continue; }
    [ "$tool" = bpftrace ] && { bpftrace_bpf_ns >> "$T/bpftrace.bpf_ns"; sysctl -qw kernel.bpf_stats_enabled="$stats_was"; }
    stop_tool "$tool" >> "$T/$tool.stop"
    read -r u s rss < <(tail -1 "$T/time")
    cpu=$(echo "$u + $s" | bc -l)
    if [ "$tool" = perf ]; then
      read -r u2 s2 rss2 < <(tail -1 "$T/time.script")
      cpu=$(echo "$cpu + $u2 + $s2" | bc -l); [ "$rss2" -gt "$rss" ] && rss=$rss2
    fi
    n=$(samples "$tool")
    echo "$rss" >> "$T/$tool.rss"
    echo "$cpu * 1000000 / $n" | bc -l >> "$T/$tool.us_per_sample"
    case $tool in ksight*) grep -o 'bpf_ns_per_run=[0-9]*' "$T/err" | cut -d= -f2 >> "$T/$tool.bpf_ns" ;; esac
  done
  echo "bench: round $round of $ROUNDS done" >&2
done

# slowdown A B: A's change against B in percent, the median of each round's (paired_percent):
# the rounds alternate, so a pair saw the same moment of the machine. n/a without B's rounds.
slowdown() {
  [ -f "$T/$2" ] || { echo n/a; return; }
  printf '%+.1f %%' "$(paired_percent "$T/$1" "$T/$2")"
}
if [ "$ROUNDS" -gt 0 ]; then
base=$(median "$T/none.ms")
base_cpu=$(median "$T/none.cpu_ms")
echo
echo "Workload: $WORK calls of outer() pinned to CPU 0, $ROUNDS alternating rounds; every profiler at 99 Hz on all CPUs. Times are medians; slowdowns are medians of each round's ratio, against no profiler and against the floor (an empty program on the same events)."
echo
echo "| profiler | workload ms | slowdown | vs floor | workload CPU ms | CPU slowdown | CPU vs floor | profiler CPU µs per sample | BPF ns per run | peak RSS | stop to symbolized output |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '| none | %.0f | | | %.0f | | | | | | |\n' "$base" "$base_cpu"
for tool in "${TOOLS[@]}"; do
  [ "$tool" = none ] && continue
  slow=$(slowdown "$tool.ms" none.ms) slow_cpu=$(slowdown "$tool.cpu_ms" none.cpu_ms)
  if [ "$tool" = floor ]; then
    printf '| floor | %.0f | %s | | %.0f | %s | | | | | |\n' "$(median "$T/floor.ms")" "$slow" "$(median "$T/floor.cpu_ms")" "$slow_cpu"
    continue
  fi
  bpf=n/a; [ -f "$T/$tool.bpf_ns" ] && bpf=$(median "$T/$tool.bpf_ns")
  printf '| %s | %.0f | %s | %s | %.0f | %s | %s | %.0f | %s | %d MB | %.2f s |\n' "$tool" \
    "$(median "$T/$tool.ms")" "$slow" "$(slowdown "$tool.ms" floor.ms)" \
    "$(median "$T/$tool.cpu_ms")" "$slow_cpu" "$(slowdown "$tool.cpu_ms" floor.cpu_ms)" \
    "$(median "$T/$tool.us_per_sample")" "$bpf" "$(median "$T/$tool.rss" | awk '{print int($1 / 1024)}')" "$(median "$T/$tool.stop")"
done
fi

# Agreement: ksight and perf record side by side over the same workload run (alternating
# rounds see different moments of the machine), top 10 functions by self samples (the
# innermost frame), idle excluded.
"$KSIGHT" profile -F 99 -o "$T/ksight.folded" 2> "$T/err" & KPID=$!
perf record -F 99 -a -g -o "$T/perf.data" 2> /dev/null > /dev/null & PPID_=$!
for _ in $(seq 300); do grep -q sampling "$T/err" 2>/dev/null && break; sleep 0.1; done
settle "$KPID" 2 "$T/err"
taskset -c 0 "$T/chain" -n "$WORK" > /dev/null
kill -INT "$KPID" "$PPID_"; wait "$KPID" "$PPID_" || true
perf script -i "$T/perf.data" -F comm,ip,sym > "$T/perf.txt" 2> /dev/null
python3 - "$T/ksight.folded" "$T/perf.txt" <<'PY'
import collections, sys
def name(f):
    # The same function in both spellings: no parameter list (perf prints none), and a frame
    # without a symbol as perf writes it.
    f = f.split("(")[0] if not f.startswith("(") else f
    return "[unknown]" if f.startswith("[") else f
def ksight(path):
    c = collections.Counter()
    for line in open(path, errors="replace"):
        stack, n = line.rstrip("\n").rsplit(" ", 1)
        leaf = stack.split(";")[-1]
        c[name(leaf[:-4] if leaf.endswith("_[k]") else leaf)] += int(n)
    return c
def perf(path):
    c, comm, first = collections.Counter(), None, False
    for line in open(path, errors="replace"):
        if not line.strip():
            comm = None
        elif not line[0].isspace():
            comm, first = line.split()[0], True
        elif first:
            first = False
            if not comm.startswith("swapper"):
                parts = line.split(None, 1)
                c[name((parts[1].strip() if len(parts) > 1 else "[unknown]").split("+0x")[0])] += 1
    return c
k, p = ksight(sys.argv[1]), perf(sys.argv[2])
top_k = [f for f, _ in k.most_common(10)]
top_p = [f for f, _ in p.most_common(10)]
print()
print(f"Top 10 functions by self samples (idle excluded), ksight and perf over the same run: {len(set(top_k) & set(top_p))} of 10 in common.")
print()
print("| rank | ksight | perf |")
print("|---|---|---|")
for i in range(10):
    a = f"{top_k[i]} ({k[top_k[i]]})" if i < len(top_k) else ""
    b = f"{top_p[i]} ({p[top_p[i]]})" if i < len(top_p) else ""
    print(f"| {i + 1} | {a} | {b} |")
PY

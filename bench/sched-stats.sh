#!/bin/bash
# bench/sched-stats.sh [ROUND_TRIPS]: the run time of the sched collector's programs per
# event, against libbpf-tools runqlat's, from the kernel's own BPF statistics (run_time_ns /
# run_cnt with kernel.bpf_stats_enabled): the time spent inside each program, which other
# load on the machine barely moves (the programs run with preemption off), unlike the
# wall-clock ratios of bench/collectors.sh. Workload: bench/pingpong.c pinned to CPU 0.
# Prints a Markdown table. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${1:-200000}
T=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; sysctl -qw kernel.bpf_stats_enabled=0; rm -rf "$T"' EXIT
scripts/deps --bench
gcc -O2 -o "$T/pingpong" bench/pingpong.c
cargo build --release --locked -q -p ksight
PORT=9733
# per_event NAME RUNS_SECONDS: "ns/run" from a run count and a total run time in seconds
row() { awk -v who="$1" -v prog="$2" -v n="$3" -v s="$4" 'BEGIN { printf "| %s | %s | %d | %.0f |\n", who, prog, n, s * 1e9 / n }'; }
{
echo "| tool | program | runs | ns per run |"
echo "|---|---|---:|---:|"
target/release/ksight serve --collectors sched --bpf-stats --web.listen-address 127.0.0.1:$PORT --log warn >/dev/null 2>&1 &
for _ in $(seq 100); do curl -sf "localhost:$PORT/metrics" >/dev/null && break; sleep 0.1; done
taskset -c 0 "$T/pingpong" "$N" 0 >/dev/null
curl -s "localhost:$PORT/metrics" > "$T/ks"
kill %1; wait %1 2>/dev/null || true
for prog in $(awk -F'"' '/^ksight_bpf_program_runs_total\{collector="sched"/ {print $4}' "$T/ks"); do
  runs=$(awk -v p="$prog" -F'[" ]' '$0 ~ "^ksight_bpf_program_runs_total" && $4 == p {print $NF}' "$T/ks")
  secs=$(awk -v p="$prog" -F'[" ]' '$0 ~ "^ksight_bpf_program_run_seconds_total" && $4 == p {print $NF}' "$T/ks")
  [ "$runs" -gt 1000 ] && row "ksight sched" "$prog" "$runs" "$secs"
done
sysctl -qw kernel.bpf_stats_enabled=1
runqlat > "$T/rq" 2>&1 & RQ=$!
for _ in $(seq 100); do bpftool prog show 2>/dev/null | grep -q 'name sched_switch' && break; sleep 0.1; done
settle "$RQ" 1 "$T/rq"
taskset -c 0 "$T/pingpong" "$N" 0 >/dev/null
bpftool prog show | awk '/ name (sched_wakeup|sched_switch|sched_wakeup_new) / {
    for (i = 1; i <= NF; i++) { if ($i == "name") n = $(i+1); if ($i == "run_time_ns") t = $(i+1); if ($i == "run_cnt") c = $(i+1) }
    if (c > 1000) printf "| libbpf-tools runqlat | %s | %d | %.0f |\n", n, c, t / c }'
} | tee "$T/table"
# One wakeup plus one switch (what each queued wait costs), ksight against runqlat.
awk -F'|' '$4 ~ /[0-9]/ { cost[$2] += $5 } END {
    k = cost[" ksight sched "]; r = cost[" libbpf-tools runqlat "]
    printf "\nwakeup + switch: ksight %.0f ns, runqlat %.0f ns: %.2f× runqlat (target <= 0.6)\n", k, r, k / r }' "$T/table"

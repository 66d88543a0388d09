#!/bin/bash
# bench/soak.sh [SECONDS]: ksight serve over a long run (default 1800 s) with a scrape every
# second, fork/exec churn (a copy of /bin/true named ksoak, run in a loop) and TCP churn (the
# scrapes themselves, plus a connect loop), then scrape latency at 1, 8 and 64 concurrent
# clients and idle CPU. Checks: RSS flat within 2 MB from the first tenth of the run to the
# end, nothing lost (ksight_events_lost_total unchanged), and exact totals: ksoak's execs and
# exits equal the runs the loop made. Idle CPU from the scheduler's nanosecond run time of its
# threads (cpu_ns in bench/lib.sh). Prints a Markdown table. Run as root on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECONDS_TOTAL=${1:-1800}
T=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT
scripts/deps
cargo build --release --locked -q -p ksight
cp /bin/true "$T/ksoak"
PORT=9719
target/release/ksight serve --web.listen-address 127.0.0.1:$PORT --log warn 2>"$T/log" &
PID=$!
for _ in $(seq 100); do curl -sf "localhost:$PORT/metrics" >/dev/null && break; sleep 0.1; done
metric() { # metric NAME [LABEL-MATCH]: the sum of the matching samples now
  curl -s "localhost:$PORT/metrics" | awk -v n="$1" -v m="${2:-}" \
    '!/^#/ { split($1, a, "{") } !/^#/ && a[1] == n && index($1, m) { s += $NF }
     END { printf "%d\n", s }'
}
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
lost0=$(metric ksight_events_lost_total)
# fork/exec churn, counted by the loop itself
( n=0; end=$((SECONDS + SECONDS_TOTAL)); while [ $SECONDS -lt $end ]; do
    "$T/ksoak"; n=$((n + 1)); done; echo "$n" > "$T/runs" ) &
CHURN=$!
# TCP churn beside the scrapes: short connections to ksight's landing page
( end=$((SECONDS + SECONDS_TOTAL)); while [ $SECONDS -lt $end ]; do
    curl -s -o /dev/null "localhost:$PORT/"; sleep 0.05; done ) &
early_rss=""
start=$SECONDS
while [ $((SECONDS - start)) -lt "$SECONDS_TOTAL" ]; do
  curl -s -o /dev/null -w '%{time_total}\n' "localhost:$PORT/metrics" >> "$T/soak_times"
  [ -z "$early_rss" ] && [ $((SECONDS - start)) -ge $((SECONDS_TOTAL / 10)) ] && early_rss=$(rss)
  sleep 1
done
wait "$CHURN"
sleep 1  # the last exit reaches the table
runs=$(cat "$T/runs")
execs=$(metric ksight_process_execs_total 'comm="ksoak"')
exits=$(metric ksight_process_exits_total 'comm="ksoak"')
lost=$(( $(metric ksight_events_lost_total) - lost0 ))
late_rss=$(rss)
pct() { sort -n "$1" | awk -v p="$2" '{a[NR]=$1} END {i=int(NR*p); if (i<1) i=1; printf "%.1f", a[i]*1000}'; }
clients() { # clients N: 20 s of N concurrent scrapers; p50/p99 of every scrape
  : > "$T/c$1"
  for _ in $(seq "$1"); do
    ( end=$((SECONDS + 20)); while [ $SECONDS -lt $end ]; do
        curl -s -o /dev/null -w '%{time_total}\n' "localhost:$PORT/metrics"; done >> "$T/c$1" ) &
  done
  wait $(jobs -p | grep -v "^$PID$") 2>/dev/null || true
  echo "| scrape p50 / p99, $1 concurrent | $(pct "$T/c$1" 0.50) / $(pct "$T/c$1" 0.99) ms | |"
}
echo "| figure ($SECONDS_TOTAL s soak) | value | target |"
echo "|---|---:|---:|"
echo "| ksoak runs / execs / exits counted | $runs / $execs / $exits | equal |"
echo "| events lost | $lost | 0 |"
echo "| RSS at 10 % / at the end | $((early_rss / 1024)) / $((late_rss / 1024)) MB | within 2 MB |"
echo "| scrape p50 / p99 during the soak | $(pct "$T/soak_times" 0.50) / $(pct "$T/soak_times" 0.99) ms | |"
clients 1; clients 8; clients 64
c0=$(cpu_ns "$PID"); sleep 60; c1=$(cpu_ns "$PID")
awk -v a="$c0" -v b="$c1" 'BEGIN { printf "| idle CPU (60 s) | %.3f %% of a core | < 0.2 %% |\n", (b-a)/1e9/60*100 }'
[ "$runs" = "$execs" ] && [ "$runs" = "$exits" ] && [ "$lost" = 0 ] &&
  [ $((late_rss - early_rss)) -le 2048 ] || { echo "soak: a check failed" >&2; exit 1; }

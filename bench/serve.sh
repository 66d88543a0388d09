#!/bin/bash
# bench/serve.sh [SCRAPES]: ksight serve's own costs with ~5,000 series: /metrics scrape time
# p50/p99, steady-state RSS, and idle CPU (share of one core over 60 s without scrapes, from
# the scheduler's nanosecond run time of its threads: cpu_ns in bench/lib.sh).
# Prints a Markdown table. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SCRAPES=${1:-200}
T=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT
scripts/deps
gcc -O2 -o "$T/series" bench/series.c
cargo build --release --locked -q -p ksight
PORT=9718
target/release/ksight serve --web.listen-address 127.0.0.1:$PORT --log warn 2>"$T/log" &
PID=$!
for _ in $(seq 100); do curl -sf "localhost:$PORT/metrics" >/dev/null && break; sleep 0.1; done
"$T/series" 100
series=$(curl -s "localhost:$PORT/metrics" | grep -vc '^#')
for _ in $(seq "$SCRAPES"); do
  curl -s -o /dev/null -w '%{time_total}\n' "localhost:$PORT/metrics"
done | sort -n > "$T/times"
pct() { awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p); if (i<1) i=1; printf "%.1f", a[i]*1000}' "$T/times"; }
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
c0=$(cpu_ns "$PID"); sleep 60; c1=$(cpu_ns "$PID")
echo "| figure | value | target |"
echo "|---|---:|---:|"
echo "| series exported | $series | ≈ 5,000 |"
echo "| scrape p50 | $(pct 0.50) ms | |"
echo "| scrape p99 | $(pct 0.99) ms | < 20 ms |"
echo "| RSS after scrapes | $((rss_kb / 1024)) MB | < 25 MB |"
awk -v a="$c0" -v b="$c1" 'BEGIN { printf "| idle CPU (60 s) | %.3f %% of a core | < 0.2 %% |\n", (b-a)/1e9/60*100 }'

#!/bin/bash
# bench/serve.sh [SCRAPES]: ksight serve's own costs with ~5,000 series: /metrics scrape time
# p50/p99, steady-state RSS, and idle CPU (share of one core over 60 s without scrapes).
# Prints a Markdown table. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
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
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$PID/stat"; }
c0=$(cpu); sleep 60; c1=$(cpu)
echo "| figure | value | target |"
echo "|---|---:|---:|"
echo "| series exported | $series | ≈ 5,000 |"
echo "| scrape p50 | $(pct 0.50) ms | |"
echo "| scrape p99 | $(pct 0.99) ms | < 20 ms |"
echo "| RSS after scrapes | $((rss_kb / 1024)) MB | < 25 MB |"
awk -v a="$c0" -v b="$c1" -v t="$ticks" 'BEGIN { printf "| idle CPU (60 s, resolution %.3f %%) | %.3f %% of a core | < 0.2 %% |\n", 100/t/60, (b-a)/t/60*100 }'

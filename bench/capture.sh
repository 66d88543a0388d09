#!/bin/bash
# bench/capture.sh [ROUNDS] [COUNT]: ksight capture against tcpdump on the same UDP flood
# over a veth pair between two network namespaces (64-byte datagrams from one unconnected
# socket in namespace A, a bound socket in B so no ICMP comes back). Each tool captures
# everything on A's veth into a file on tmpfs (/dev/shm), attached and settled before the
# flood. For each paced rate (then unpaced): packets lost by the capture (the tool's own
# count: tcpdump's "dropped by kernel", ksight's ring-buffer losses), the tool's CPU time
# per packet (from the scheduler's nanosecond run time of its threads), and the sender's time
# against no capture. Median of ROUNDS, rounds interleaved. DIR: where the files go (default
# /dev/shm, a tmpfs; a directory on disk such as /var/tmp gives the page-cache path a capture
# to disk takes). BUFFER: -B for both tools, in KiB (default: each tool's own, 2 MiB for
# both). The sender runs on CPU 0 and the capturing tool on CPU 1: the kernel here
# does not account interrupt time apart (no CONFIG_IRQ_TIME_ACCOUNTING), so the flood's
# network softirqs, which run on the sender's CPU, would otherwise be charged to whichever
# task they interrupt, the tool's run time swinging 4-fold from round to round.
# Prints Markdown tables. Run as root on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-3}
COUNT=${2:-200000}
# datagrams per second; 0: as fast as the sender goes (RATES="…" to choose)
read -r -a RATES <<< "${RATES:-50000 100000 150000 200000 0}"
A=ksbenchA$$ B=ksbenchB$$
DIR=${DIR:-/dev/shm}
T=$(mktemp -d "$DIR/ksight-bench.XXXXXX")
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
scripts/deps --bench
gcc -O2 -o "$T/udpflood" bench/udpflood.c
cargo build --release --locked -q -p ksight
KSIGHT=$PWD/target/release/ksight

ip netns add "$A"; ip netns add "$B"
ip -n "$A" link add va type veth peer name vb
ip -n "$A" link set vb netns "$B"
ip -n "$A" addr add 10.99.0.1/24 dev va; ip -n "$B" addr add 10.99.0.2/24 dev vb
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set va up; ip -n "$B" link set vb up
ip netns exec "$B" python3 -c 'import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
s.bind(("10.99.0.2", 9)); time.sleep(1e6)' &
sleep 0.5
nsenter --net="/run/netns/$A" "$T/udpflood" 10.99.0.2 9 1000 0 64 > /dev/null # ARP

# start_tool NAME: starts the capture (output into $T), waits until it is attached.
start_tool() {
  rm -f "$T/cap" "$T/err"; : > "$T/err"
  case $1 in
    none) PID=; return ;;
    tcpdump) ip netns exec "$A" taskset -c 1 tcpdump -i va ${BUFFER:+-B "$BUFFER"} -w "$T/cap" 2> "$T/err" & ;;
    # setns only (nsenter --net): ksight keeps this host's cgroup mounts for its socket hooks
    ksight) nsenter --net="/run/netns/$A" taskset -c 1 "$KSIGHT" capture -i va ${BUFFER:+-B "$BUFFER"} -w "$T/cap" 2> "$T/err" & ;;
  esac
  PID=$!
  local marker; case $1 in tcpdump) marker="listening on" ;; ksight) marker="message=capturing" ;; esac
  for _ in $(seq 300); do grep -q "$marker" "$T/err" && break; sleep 0.1; done
  grep -q "$marker" "$T/err" || { echo "bench: $1 did not start: $(cat "$T/err")" >&2; exit 1; }
  settle "$PID" 1 "$T/err"
}

stop_tool() {
  [ -z "$PID" ] && return
  kill -INT "$PID"; wait "$PID" 2>/dev/null || true
}

# lost NAME: what the tool says it could not capture.
lost() {
  case $1 in
    none) echo - ;;
    tcpdump) sed -n 's/^\([0-9]*\) packets dropped by kernel$/\1/p' "$T/err" ;;
    ksight) sed -n 's/.* \([0-9]*\) lost (ring buffer full).*/\1/p' "$T/err" ;;
  esac
}

# measure NAME RATE: one round; prints "sender_ns lost cpu_ns_per_packet".
measure() {
  local t0 t1 ns
  start_tool "$1"
  [ -n "$PID" ] && t0=$(cpu_ns "$PID")
  ns=$(nsenter --net="/run/netns/$A" taskset -c 0 "$T/udpflood" 10.99.0.2 9 "$COUNT" "$2" 64)
  sleep 0.5 # the tool catches up with what is buffered
  [ -n "$PID" ] && t1=$(cpu_ns "$PID")
  stop_tool "$1"
  local cpu=-
  [ -n "$PID" ] && cpu=$(( (t1 - t0) / COUNT ))
  echo "$ns $(lost "$1") $cpu"
}

read -r -a TOOLS <<< "${TOOLS:-none tcpdump ksight}"
declare -A SENDER LOST CPU
for rate in "${RATES[@]}"; do
  for round in $(seq "$ROUNDS"); do
    for tool in "${TOOLS[@]}"; do
      read -r ns l c < <(measure "$tool" "$rate")
      SENDER[$tool,$rate]+="$ns "; LOST[$tool,$rate]+="$l "; CPU[$tool,$rate]+="$c "
      echo "bench: rate $rate round $round $tool: sender ${ns} ns, lost $l, cpu/pkt $c ns" >&2
    done
  done
done

echo "UDP flood over veth, $COUNT datagrams of 64 bytes per round, median of $ROUNDS rounds"
echo "($(nproc) vCPUs, kernel $(uname -r)); lost = the tool's own count; CPU = the capturing"
echo "process's run time per packet (user and system); files in $DIR ($(findmnt -fno FSTYPE --target "$DIR"))."
echo
# vs_tcpdump ARRAY TOOL RATE: the median over rounds of ARRAY[TOOL,RATE] over
# ARRAY[tcpdump,RATE] in the same round (paired_ratio: the machine's speed drifts between
# rounds; a round's tools run back to back).
vs_tcpdump() {
  local -n values=$1
  [ "$2" = ksight ] && [ -n "${values[tcpdump,$3]:-}" ] || { echo -; return; }
  local r; r=$(paired_ratio <(echo "${values[ksight,$3]}") <(echo "${values[tcpdump,$3]}"))
  if [ "$r" = - ]; then echo -; else printf '%.2f' "$r"; fi
}
# per_second NS: COUNT datagrams in NS nanoseconds, per second (a whole number).
per_second() { awk -v c="$COUNT" -v ns="$1" 'BEGIN {printf "%d", c * 1e9 / ns}'; }

echo "| rate (pps) | tool | sender pps | sender slowdown | sender time / with tcpdump | lost | CPU ns/packet | CPU / tcpdump's |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for rate in "${RATES[@]}"; do
  base=$(median <<< "${SENDER[none,$rate]}")
  for tool in "${TOOLS[@]}"; do
    ns=$(median <<< "${SENDER[$tool,$rate]}")
    pps=$(per_second "$ns")
    slow=$(awk -v a="$ns" -v b="$base" 'BEGIN {printf "%+.1f %%", (a / b - 1) * 100}')
    l=$(tr ' ' '\n' <<< "${LOST[$tool,$rate]}" | grep -v '^-$' | sort -n | tail -1)
    c=$(median <<< "${CPU[$tool,$rate]}")
    [ "$c" = - ] || c=$(printf '%.0f' "$c")
    label=$([ "$rate" = 0 ] && echo unpaced || echo "$rate")
    echo "| $label | $tool | $pps | $slow | $(vs_tcpdump SENDER "$tool" "$rate") | ${l:--} | $c | $(vs_tcpdump CPU "$tool" "$rate") |"
  done
done
echo
echo "The two ratios: the median over rounds of ksight's figure over tcpdump's in the same round"
echo "(the sender's time to send them all; the tool's CPU per packet)."
echo "lost: the worst round. Highest rate without loss in any round (this rate and every"
echo "lower one):"
for tool in "${TOOLS[@]}"; do
  [ "$tool" = none ] && continue
  best=none
  for rate in "${RATES[@]}"; do
    worst=$(tr ' ' '\n' <<< "${LOST[$tool,$rate]}" | grep -v '^$' | sort -n | tail -1)
    [ "$worst" = 0 ] || break
    if [ "$rate" = 0 ]; then
      best="unpaced ($(per_second "$(median <<< "${SENDER[$tool,0]}")") pps)"
    else best=$rate; fi
  done
  echo "- $tool: $best"
done

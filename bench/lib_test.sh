#!/bin/bash
# bench/lib_test.sh: unit checks of bench/lib.sh (no root, no tools, about a second).
# `bash bench/lib_test.sh`; exits non-zero if a check fails. scripts/test runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
T=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT
failed=0

# check WHAT EXPECTED ACTUAL
check() {
  if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL $1: expected '$2', got '$3'"; failed=1; fi
}

# median: stdin or a file; one a line or space-separated; the true median; `-` when empty.
check "median of 3 1 2" 2 "$(echo "3 1 2" | median)"
check "median of 4 1 3 2 (even: mean of the middle two)" 2.5 "$(echo "4 1 3 2" | median)"
check "median of nothing" - "$(median < /dev/null)"
check "median of blank lines" - "$(printf '\n \n\n' | median)"
check "median of a trailing space (a bash array joined)" 7 "$(echo "5 9 7 " | median)"
printf '10\n\n30\n20\n' > "$T/f"
check "median of a file, a blank line in it" 20 "$(median "$T/f")"
check "median, one a line and several on a line" 3 "$(printf '1 5\n3\n' | median)"
check "median keeps the odd one as written" 350.0 "$(echo "350.0 349.5 351.5" | median)"
check "median orders numerically (10 > 9)" 9.5 "$(echo "9 10 100 2" | median)"
check "median of decimals and bc's .5" 0.75 "$(echo ".5 1 .25 2" | median)"
check "median of large ns (no e-notation)" 3000000000.5 "$(echo "3000000000 3000000001" | median)"
check "median skips -" 6 "$(echo "5 - 7 -" | median)"
check "median of only -" - "$(echo "- -" | median)"
check "median of one" 42 "$(echo 42 | median)"
check "median of negatives" -1.5 "$(echo "-1 -2 -3 0" | median)"

# minimum
check "minimum of 3 1 2" 1 "$(echo "3 1 2" | minimum)"
check "minimum orders numerically" 9 "$(printf '10\n9\n100\n' | minimum)"
check "minimum of a file" 10 "$(minimum "$T/f")"
check "minimum of decimals and negatives" -1.5 "$(echo "2.5 -1.5 0" | minimum)"
check "minimum of nothing" - "$(minimum < /dev/null)"
check "minimum skips -" 4 "$(echo "- 4 8" | minimum)"

# paired_ratio, paired_percent: rounds paired by position.
printf '2\n4\n9\n' > "$T/a"; printf '1\n2\n3\n' > "$T/b"
check "paired_ratio of files (2/1 4/2 9/3)" 2 "$(paired_ratio "$T/a" "$T/b")"
check "paired_ratio pairs rounds, not medians" 2 \
  "$(paired_ratio <(echo "1 30") <(echo "1 10"))"  # ratios 1 and 3; the medians' ratio: 2.82
check "paired_ratio of space-separated values" 0.5 "$(paired_ratio <(echo "1 2 3 ") <(echo "2 4 6 "))"
check "paired_ratio leaves out - and a 0 base, keeps the pairing" 2 \
  "$(paired_ratio <(echo "- 4 6 8") <(echo "1 2 3 0"))"
check "paired_ratio with nothing paired" - "$(paired_ratio <(echo "- -") <(echo "1 2"))"
check "paired_ratio of empty files" - "$(paired_ratio /dev/null /dev/null)"
check "paired_ratio of fractions" 0.25 "$(paired_ratio <(echo "1 1 1") <(echo "4 4 4"))"
check "paired_percent (+10 +20 -10)" 10 "$(paired_percent <(echo "110 120 90") <(echo "100 100 100"))"
check "paired_percent, even rounds" -5 "$(paired_percent <(echo "90 100") <(echo "100 100"))"
check "paired_percent with nothing paired" - "$(paired_percent /dev/null /dev/null)"

# cpu_ns: this shell's threads' run time, in ns, growing as it runs.
a=$(cpu_ns $$)
for _ in $(seq 20000); do :; done
b=$(cpu_ns $$)
[[ $a =~ ^[0-9]+$ ]] && [[ $b =~ ^[0-9]+$ ]] && [ "$b" -gt "$a" ] &&
  check "cpu_ns grows with work (integer ns)" yes yes || check "cpu_ns grows with work" "$a < $b, integers" "$a, $b"
# 20,000 loop turns of bash take milliseconds: far more than a tick's 0, far less than 10 s.
[ $((b - a)) -gt 100000 ] && [ $((b - a)) -lt 10000000000 ] &&
  check "cpu_ns is in ns" yes yes || check "cpu_ns is in ns" "100 µs < delta < 10 s" "$((b - a)) ns"
sleep 2 & p=$!
check "cpu_ns of a sleeping process is small" yes "$([ "$(cpu_ns $p)" -lt 1000000000 ] && echo yes || echo no)"
kill $p; wait $p 2>/dev/null || true
check "cpu_ns of no process fails" failed "$(cpu_ns 999999999 2>/dev/null && echo ok || echo failed)"

# settle: waits, then fails if the process is gone, showing its output.
sleep 5 & p=$!
t0=$(date +%s%N)
check "settle on a live process" ok "$(settle $p 0.2 && echo ok || echo failed)"
t1=$(date +%s%N)
check "settle waits SECONDS" yes "$([ $((t1 - t0)) -ge 200000000 ] && echo yes || echo no)"
kill $p; wait $p 2>/dev/null || true
echo "it said this" > "$T/log"
( exit 0 ) & p=$!; wait $p
check "settle on an exited process fails" failed "$(settle $p 0 2>/dev/null && echo ok || echo failed)"
out=$(settle $p 0 "$T/log" 2>&1 || true)
check "settle shows the log" yes "$(grep -q 'it said this' <<< "$out" && echo yes || echo no)"

[ "$failed" = 0 ] && echo "bench/lib.sh: all checks passed" || { echo "bench/lib.sh: a check failed" >&2; exit 1; }

# bench/lib.sh: what the bench scripts share, sourced by each (`. bench/lib.sh` from the
# repository's root): the statistics of their tables, a process's CPU time, and the wait
# between a tool attaching and the measurement. It sets no shell options: the scripts run
# `set -euo pipefail`, and every function here is clean under it. Checked by
# bench/lib_test.sh (scripts/test runs it).
#
# Numbers: a FILE argument, or stdin without one; one a line or several separated by spaces
# or tabs; blank lines are ignored, and so is `-` (what a round without a figure records, and
# what these functions print when there is nothing).

# _values [FILE]: the words of FILE (or stdin), one a line, `-` kept (paired_ratio pairs
# rounds by position).
_values() {
  if [ $# -gt 0 ]; then cat -- "$1"; else cat; fi | awk '{ for (i = 1; i <= NF; i++) print $i }'
}

# median [FILE]: the median of the numbers: the middle one for an odd count (as written), the
# mean of the two middle ones for an even count; `-` when there are none.
median() {
  _values "$@" | awk '$1 != "-"' | sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) print "-"
    else if (NR % 2) print a[(NR + 1) / 2]
    else printf "%.15g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# minimum [FILE]: the smallest of the numbers (as written); `-` when there are none.
minimum() {
  _values "$@" | awk '$1 != "-" && (n++ == 0 || $1 + 0 < m + 0) { m = $1 } END { print n ? m : "-" }'
}

# paired_ratio A B: the median over rounds of A's value / B's value in the same round, the
# rounds paired by position (line i of A with line i of B, or word i on one line): rounds
# alternate the conditions, so a pair saw the same moment of the machine, and its ratio does
# not take the drift between rounds. A round with `-` on either side, or 0 in B, is left
# out; `-` when no round is left. A and B are files (<(echo "$values") for a variable).
paired_ratio() {
  paste -d' ' <(_values "$1") <(_values "$2") |
    awk -v OFMT=%.15g 'NF == 2 && $1 != "-" && $2 != "-" && $2 + 0 != 0 { print $1 / $2 }' | median
}

# paired_percent A B: the same, as A's change against B in percent: (ratio - 1) * 100 (the
# median of each round's change: the transform keeps the order); `-` when no round is left.
paired_percent() {
  local r
  r=$(paired_ratio "$1" "$2")
  if [ "$r" = - ]; then echo -; else awk -v r="$r" 'BEGIN { printf "%.15g\n", (r - 1) * 100 }'; fi
}

# cpu_ns PID: the CPU time of the process in nanoseconds (user and system), from the
# scheduler's run time of each of its threads (the first field of /proc/PID/task/*/schedstat,
# in ns) rather than /proc/PID/stat's utime + stime (clock ticks, 1/`getconf CLK_TCK` s: 10
# ms here, coarser than most of what the benches measure). Threads that have exited are not
# counted: take both readings while the tool runs. Fails if there is no such process.
cpu_ns() {
  local files=(/proc/"$1"/task/*/schedstat)
  [ -e "${files[0]}" ] || { echo "cpu_ns: no process $1" >&2; return 1; }
  # A thread may exit between the glob and the read: what remains is read.
  { cat "${files[@]}" 2>/dev/null || true; } | awk '{ n += $1 } END { printf "%.0f\n", n }'
}

# settle PID [SECONDS] [LOG...]: the wait after a tool has said it is attached (or, for a tool
# that says nothing, after its start) and before the measurement: SECONDS (default 1) for the
# rest of its start-up to pass (probes still attaching, first reads of its maps, block-buffered
# output), so that the measurement sees only its steady cost. Then fails, showing the LOG
# files, if PID has exited meanwhile.
settle() {
  local pid=$1 seconds=${2:-1} comm
  shift "$(($# < 2 ? $# : 2))"
  comm=$(cat /proc/"$pid"/comm 2>/dev/null || echo process)
  sleep "$seconds"
  kill -0 "$pid" 2>/dev/null && return 0
  echo "bench: $comm (pid $pid) exited while settling${1:+; its output:}" >&2
  [ $# -eq 0 ] || cat -- "$@" >&2 2>/dev/null || true
  return 1
}

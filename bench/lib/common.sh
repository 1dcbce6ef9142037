# shellcheck shell=bash
# bench/lib/common.sh: helpers shared by the benchmark scripts
# (bench/lifecycle/run.sh, bench/rollouts/shadow.sh, bench/server/run.sh).
# Sourced, not run:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
#
# Sourcing it defines the functions below and sets
#
#   bench_script  the path of the script that sourced it
#   bench_prog    that script's file name, the prefix of its messages
#   repo          the root of the checkout (two levels above this file)
#   python        /usr/bin/python3 when it is there, else python3 (PATH)
#
# The scripts run with set -euo pipefail; so do these functions.
#
#   usage                      prints the script's header comment (line 2 up
#                              to the `set -euo` line) without the "# ".
#   die MESSAGE...             "PROG: MESSAGE" on stderr, exit 1.
#   want_int OPTION VALUE [WHAT]
#                              dies with "OPTION 'VALUE': expected WHAT"
#                              (default "a positive integer") unless VALUE is
#                              a positive integer.
#   find_edgeserve REPO        prints the first executable of REPO/build/
#                              edgeserve and `command -v edgeserve`, or
#                              nothing; always succeeds.
#   serve_has_option OPTION    whether `$edgeserve serve --help` mentions
#                              OPTION (reads the whole help first, so that
#                              pipefail sees no SIGPIPE).
#   stop_pid PID...            SIGTERM to each (empty ones skipped), then up
#                              to stop_grace_tenths tenths of a second each
#                              (default 100: 10 s) to drain, then SIGKILL;
#                              reaps them.
#   install_cleanup PIDVAR...  on exit, Ctrl-C (status 130) and SIGTERM (143)
#                              included: SIGKILL $bench_pid when set,
#                              stop_pid the pids the named variables hold at
#                              that moment, remove $tmp, keep the status.
#   wait_serving PID OUT LOG SECONDS LABEL
#                              waits until OUT, the stdout of `edgeserve
#                              serve` (PID), has its "serving on http://..."
#                              line (printed at every log level, right after
#                              the server_ready log line) and sets
#                              serving_port. Returns 1 when PID exits first
#                              (after "PROG: LABEL exited during startup; its
#                              log:" and the last 20 lines of LOG on stderr),
#                              2 when SECONDS pass without the line.
#   calc EXPR                  floating-point arithmetic (awk, no bc needed).
#   median                     the median of the numbers on stdin (separated
#                              by spaces or newlines), awk's default format.
#   metric PORT NAME LABEL_SUBSTRING
#                              sum of the samples of the Prometheus metric
#                              NAME at 127.0.0.1:PORT/metrics whose labels
#                              contain the substring (e.g. model="m").

# shellcheck disable=SC2034 # for the scripts that source this file
bench_script=${BASH_SOURCE[1]}
bench_prog=${bench_script##*/}
# shellcheck disable=SC2034
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
python=/usr/bin/python3
[ -x "$python" ] || python=python3

usage() {
	sed -n '2,/^set -euo/p' "$bench_script" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
	echo "$bench_prog: $*" >&2
	exit 1
}

want_int() {
	[[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 '$2': expected ${3:-a positive integer}"
}

find_edgeserve() {
	local candidate
	for candidate in "$1/build/edgeserve" "$(command -v edgeserve || true)"; do
		if [ -n "$candidate" ] && [ -x "$candidate" ]; then
			echo "$candidate"
			break
		fi
	done
	return 0
}

serve_has_option() {
	local help_text
	# shellcheck disable=SC2154 # set by the sourcing script
	help_text=$("$edgeserve" serve --help 2>/dev/null || true)
	grep -q -- "$1" <<<"$help_text"
}

stop_pid() {
	local pid
	for pid in "$@"; do
		[ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "$@"; do
		[ -n "$pid" ] || continue
		for _ in $(seq "${stop_grace_tenths:-100}"); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}

install_cleanup() {
	bench_cleanup_vars=("$@")
	trap bench_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

bench_cleanup() {
	local status=$? var pids=()
	trap - EXIT INT TERM
	[ -n "${bench_pid:-}" ] && kill -KILL "$bench_pid" 2>/dev/null || true
	for var in ${bench_cleanup_vars[@]+"${bench_cleanup_vars[@]}"}; do
		pids+=("${!var:-}")
	done
	stop_pid ${pids[@]+"${pids[@]}"}
	[ -z "${tmp:-}" ] || rm -rf "$tmp"
	exit "$status"
}

wait_serving() {
	local pid=$1 out=$2 log=$3 deadline=$((SECONDS + $4)) label=$5 line
	while [ $SECONDS -lt $deadline ]; do
		line=$(grep -m1 'serving on http://' "$out" 2>/dev/null || true)
		if [ -n "$line" ]; then
			# shellcheck disable=SC2034 # read by the caller
			serving_port=${line##*:}
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "$bench_prog: $label exited during startup; its log:" >&2
			tail -n 20 "$log" >&2 || true
			return 1
		fi
		sleep 0.01
	done
	return 2
}

calc() { awk "BEGIN { print $* }"; }

median() {
	tr ' ' '\n' | grep -v '^$' | sort -g |
		awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

metric() {
	curl -s --max-time 10 "http://127.0.0.1:$1/metrics" |
		awk -v name="$2" -v sub_="$3" '
			index($0, name "{") == 1 && index($0, sub_) { s += $NF }
			END { printf "%g\n", s + 0 }'
}

#!/usr/bin/env bash
# bench/server/run.sh: requests per second of `edgeserve serve` on a tiny
# model against nginx answering a fixed JSON with `return 200`, on the same
# machine in the same run.
#
#   bench/server/run.sh [--duration 10s] [--connections 16] [--threads 2]
#                       [--rounds 3] [--edgeserve PATH] [--no-bench]
#                       [-- EXTRA edgeserve serve ARGS...]
#
# It starts edgeserve serve on the example repository (examples/models; the
# request goes to `scaler`, FP32 [1,8] -> [1,8]) and nginx on two free
# 127.0.0.1 ports, waits until both answer, then runs wrk against each in
# turn, alternating, --rounds times: wrk -t THREADS -c CONNECTIONS -d
# DURATION with post.lua, which POSTs the same KServe v2 infer body to both.
# It prints one row per round (edgeserve req/s, nginx req/s, ratio) and the
# median ratio. Then, unless --no-bench, it measures the same two servers
# with `edgeserve bench` at concurrency CONNECTIONS, to compare the two load
# generators.
#
# Everything it starts runs as the current user, with its config, pid and
# logs in a temporary directory that is removed on exit; the processes are
# stopped on exit, Ctrl-C included. A benchmark, not a test: it never fails
# because the machine was slow, only when something could not start.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

duration=10s
connections=16
threads=2
rounds=3
edgeserve=${EDGESERVE:-}
run_bench=1
nginx=${NGINX:-/usr/sbin/nginx}
wrk=${WRK:-wrk}
serve_args=()

while [ $# -gt 0 ]; do
	case "$1" in
	--duration) duration=$2; shift 2 ;;
	--duration=*) duration=${1#*=}; shift ;;
	--connections) connections=$2; shift 2 ;;
	--connections=*) connections=${1#*=}; shift ;;
	--threads) threads=$2; shift 2 ;;
	--threads=*) threads=${1#*=}; shift ;;
	--rounds) rounds=$2; shift 2 ;;
	--rounds=*) rounds=${1#*=}; shift ;;
	--edgeserve) edgeserve=$2; shift 2 ;;
	--edgeserve=*) edgeserve=${1#*=}; shift ;;
	--no-bench) run_bench=0; shift ;;
	-h|--help) usage; exit 0 ;;
	--) shift; serve_args=("$@"); break ;;
	*) echo "run.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
	esac
done

[[ $duration =~ ^[0-9]+[smh]?$ ]] || die "--duration '$duration': expected e.g. 10s, 30s, 2m"
want_int --connections "$connections"
want_int --threads "$threads"
want_int --rounds "$rounds"
[ "$threads" -le "$connections" ] || threads=$connections

[ -n "$edgeserve" ] || edgeserve=$(find_edgeserve "$repo")
[ -n "$edgeserve" ] && [ -x "$edgeserve" ] ||
	die "no edgeserve binary: build it (cmake --build build) or pass --edgeserve PATH"
[ -x "$nginx" ] || die "nginx not found at $nginx (apt-get install nginx, or NGINX=PATH)"
command -v "$wrk" >/dev/null || die "wrk not found (apt-get install wrk, or WRK=PATH)"
command -v curl >/dev/null || die "curl not found"
"$edgeserve" serve --help >/dev/null 2>&1 || die "$edgeserve has no working 'serve' subcommand"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/es-bench-server.XXXXXX")
es_pid=
nginx_pid=
stop_grace_tenths=50 # give each a few seconds to drain, then insist
install_cleanup es_pid nginx_pid

# A port nobody listens on now (the kernel's pick for a bound socket).
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready NAME PID URL: up to 60 s for URL to answer 200.
wait_ready() {
	local name=$1 pid=$2 url=$3 log=$4
	for _ in $(seq 600); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "run.sh: $name exited during startup; its log:" >&2
			tail -n 20 "$log" >&2 || true
			exit 1
		fi
		if curl -sf -o /dev/null --max-time 1 "$url"; then
			return 0
		fi
		sleep 0.1
	done
	die "$name did not become ready at $url within 60 s (log: $log)"
}

es_port=$(free_port)
nginx_port=$(free_port)
while [ "$nginx_port" = "$es_port" ]; do nginx_port=$(free_port); done

# ---- edgeserve -----------------------------------------------------------
# nginx runs with access_log off; the fair counterpart is edgeserve without
# its per-request access log line (INFO). `-- --log_level INFO` puts it back.
log_level=(--log_level WARNING)
for arg in ${serve_args[@]+"${serve_args[@]}"}; do
	case "$arg" in --log_level|--log_level=*) log_level=() ;; esac
done
"$edgeserve" serve --model_repository_path "$repo/examples/models" \
	--rest_bind_address 127.0.0.1 --rest_port "$es_port" \
	${log_level[@]+"${log_level[@]}"} ${serve_args[@]+"${serve_args[@]}"} \
	>"$tmp/edgeserve.log" 2>&1 &
es_pid=$!

# ---- nginx ---------------------------------------------------------------
# A reply about the size of edgeserve's answer for `scaler`; the metadata
# location lets `edgeserve bench` read the model from nginx too.
reply='{"model_name":"scaler","model_version":"1","outputs":[{"name":"y","datatype":"FP32","shape":[1,8],"data":[1,-2.5,4,7,-8,11.5,12,-15]}]}'
metadata='{"name":"scaler","versions":["1"],"platform":"onnxruntime_onnx","inputs":[{"name":"x","datatype":"FP32","shape":[-1,8]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,8]}]}'
user_line=
if [ "$(id -u)" = 0 ]; then
	# the master runs as root: keep the workers on the same user
	user_line="user $(id -un) $(id -gn);"
fi
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<EOF
$user_line
worker_processes auto;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events {
	worker_connections 4096;
}
http {
	access_log off;
	client_body_temp_path $tmp/nginx/client_body;
	proxy_temp_path $tmp/nginx/proxy;
	fastcgi_temp_path $tmp/nginx/fastcgi;
	uwsgi_temp_path $tmp/nginx/uwsgi;
	scgi_temp_path $tmp/nginx/scgi;
	# like edgeserve: no cap on requests per kept-alive connection
	keepalive_requests 100000000;
	keepalive_timeout 75s;
	default_type application/json;
	server {
		listen 127.0.0.1:$nginx_port;
		location = /v2/models/scaler {
			return 200 '$metadata';
		}
		location / {
			return 200 '$reply';
		}
	}
}
EOF
"$nginx" -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" -g 'daemon off;' \
	>"$tmp/nginx/stdout.log" 2>&1 &
nginx_pid=$!

es_url="http://127.0.0.1:$es_port"
nginx_url="http://127.0.0.1:$nginx_port"
wait_ready edgeserve "$es_pid" "$es_url/v2/health/ready" "$tmp/edgeserve.log"
wait_ready nginx "$nginx_pid" "$nginx_url/" "$tmp/nginx/error.log"

# The infer request must work before it is timed.
body=$(curl -sS --max-time 5 -H 'Content-Type: application/json' \
	-d '{"inputs":[{"name":"x","shape":[1,8],"datatype":"FP32","data":[0.5,-1.25,2,3.5,-4,5.75,6,-7.5]}]}' \
	-w '\n%{http_code}' "$es_url/v2/models/scaler/infer") ||
	die "infer request to edgeserve failed"
[ "${body##*$'\n'}" = 200 ] || die "edgeserve answered the infer request with: $body"

# ---- wrk ------------------------------------------------------------------
# run_wrk URL -> prints req/s (and warns about errors on stderr)
run_wrk() {
	local url=$1 out
	out=$("$wrk" -t"$threads" -c"$connections" -d"$duration" \
		-s "$here/post.lua" "$url" 2>&1) || {
		echo "$out" >&2
		die "wrk failed against $url"
	}
	echo "$out" >"$tmp/wrk.last"
	local errors
	errors=$(sed -n 's/^Errors: //p' <<<"$out")
	if grep -q 'Non-2xx' <<<"$out" || ! grep -q 'status 0, connect 0, read 0, write 0, timeout 0' <<<"$out"; then
		echo "  (errors against $url: ${errors:-?}; $(grep 'Non-2xx' <<<"$out" || true))" >&2
	fi
	awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}

# ratio_median: the median of the ratios on stdin, one a line ("nan" for
# none; the mean of the middle two with 4 decimals for an even count).
ratio_median() {
	sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "nan"; exit }
		if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# round_row ROUND ES_RPS NGINX_RPS: appends ES_RPS / NGINX_RPS to ratios and
# prints the round's row.
round_row() {
	local ratio
	ratio=$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
	ratios+=("$ratio")
	printf '%-6s %16.1f %16.1f %8s\n' "$1" "$2" "$3" "$ratio"
}

cores=$(nproc)
echo "edgeserve ($edgeserve) vs nginx $("$nginx" -v 2>&1 | sed 's/.*nginx\///'), $cores cores, all on 127.0.0.1"
echo "wrk -t$threads -c$connections -d$duration -s post.lua (POST of a KServe v2 infer body for 'scaler'), $rounds rounds, alternating"
echo
printf '%-6s %16s %16s %8s\n' round "edgeserve req/s" "nginx req/s" ratio
ratios=()
for round in $(seq "$rounds"); do
	es_rps=$(run_wrk "$es_url/v2/models/scaler/infer")
	nginx_rps=$(run_wrk "$nginx_url/v2/models/scaler/infer")
	[ -n "$es_rps" ] && [ -n "$nginx_rps" ] || die "could not read Requests/sec from wrk (last output in $tmp/wrk.last)"
	round_row "$round" "$es_rps" "$nginx_rps"
done
wrk_median=$(printf '%s\n' "${ratios[@]}" | ratio_median)
echo
echo "median ratio edgeserve/nginx (wrk): $wrk_median   (goal: >= 0.60)"

# ---- edgeserve bench ------------------------------------------------------
if [ "$run_bench" = 1 ]; then
	secs=$duration
	echo
	echo "the same with edgeserve bench --concurrency $connections --duration $duration (JSON body, random data):"
	printf '%-6s %16s %16s %8s\n' round "edgeserve req/s" "nginx req/s" ratio
	ratios=()
	for round in $(seq "$rounds"); do
		rps=()
		for url in "$es_url" "$nginx_url"; do
			json=$("$edgeserve" bench "$url" --model scaler --random \
				--concurrency "$connections" --duration "$secs" --json) ||
				die "edgeserve bench failed against $url"
			rps+=("$(grep -o '"throughput":[0-9.]*' <<<"$json" | cut -d: -f2)")
			errs=$(grep -o '"errors":{[^}]*}' <<<"$json")
			[ "$errs" = '"errors":{}' ] || echo "  (errors against $url: $errs)" >&2
		done
		round_row "$round" "${rps[0]}" "${rps[1]}"
	done
	bench_median=$(printf '%s\n' "${ratios[@]}" | ratio_median)
	echo
	echo "median ratio edgeserve/nginx (edgeserve bench): $bench_median"
fi

#!/usr/bin/env bash
# ONNX Runtime latency on every generated model: a table of p50/p90/p99 and
# session create time, each the median over RUNS separate processes.
#
#   bench/peer/bench_ort.sh [--threads N] [--runs R] [--models "a b"] [--opsets "13"]
#
# A benchmark, not a test: it never fails because the machine was slow.
# Environment: MODELS_DIR (default bench/models/out; generated when missing).

set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
threads=1 runs=3 opsets=13
models="mlp mobilenet_v2 resnet18 resnet50 bert"
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads=${2:?}; shift ;;
        --runs) runs=${2:?}; shift ;;
        --models) models=${2:?}; shift ;;
        --opsets) opsets=${2:?}; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench_ort: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
models_dir=${MODELS_DIR:-$root/bench/models/out}
[ -d "$here/node_modules/onnxruntime-node" ] || "$here/setup" >&2 || exit 2
# shellcheck disable=SC2086
/usr/bin/python3 "$root/bench/models/generate.py" "$models_dir" --only $models >/dev/null || exit 2

# Iterations per model: enough for a stable p50 in a few seconds.
iters_for() {
    case "$1" in mlp) echo 500 ;; mobilenet_v2|bert) echo 100 ;; resnet18) echo 40 ;; *) echo 20 ;; esac
}

echo "onnxruntime-node CPU, $threads intra-op thread(s), graph optimization all;" \
     "median of $runs runs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-13s %5s %10s %10s %10s %12s\n" model opset "p50 ms" "p90 ms" "p99 ms" "create ms"
for m in $models; do
    in=input; [ "$m" = bert ] && in=input_ids
    iters=$(iters_for "$m")
    for o in $opsets; do
        results=()
        for _ in $(seq "$runs"); do
            results+=("$(node "$here/ort_run.js" "$models_dir/${m}_op$o.onnx" \
                --input "$in=$models_dir/${m}_input.pb" --threads "$threads" \
                --warmup 10 --iters "$iters" --json)") || exit 1
        done
        printf '%s\n' "${results[@]}" | node -e '
            const rows = require("fs").readFileSync(0, "utf8").trim().split("\n").map(JSON.parse);
            const med = (k) => { const v = rows.map((r) => r[k]).sort((a, b) => a - b);
                                 return v[(v.length - 1) >> 1]; };
            const [m, o] = process.argv.slice(1);
            console.log(m.padEnd(13), o.padStart(5), med("p50_ms").toFixed(3).padStart(10),
                med("p90_ms").toFixed(3).padStart(10), med("p99_ms").toFixed(3).padStart(10),
                med("session_create_ms").toFixed(1).padStart(12));' "$m" "$o"
    done
done

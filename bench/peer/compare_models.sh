#!/usr/bin/env bash
# Compare edgeserve's outputs with ONNX Runtime's on every generated model.
#
#   bench/peer/compare_models.sh [--peer-only] [--threads N] [--models "a b"]
#                                [--opsets "13 17"] [--keep]
#
# For each model NAME and opset it runs, on the same input NAME_input.pb,
#   $EDGESERVE run NAME_opO.onnx --input IN=NAME_input.pb --save-outputs DIR_ES
#   node ort_run.js NAME_opO.onnx --input IN=NAME_input.pb --save-outputs DIR_ORT
# and compares them with compare.py (pass: max|es-ort| <= 1e-4 * max|ort|).
# The last column compares ORT with PyTorch's own output (NAME_torch_output.pb)
# for information: it shows the reference itself is sound.
#
# --peer-only  needs no edgeserve: compares ORT (candidate) with PyTorch
#              (reference), to check the models, the runner and the comparison.
# --keep       keeps the work directory (it is kept anyway when a row fails).
#
# Environment: EDGESERVE (default build/edgeserve, relative to the repository
# root), MODELS_DIR (default bench/models/out; generated when files are
# missing), TIMEOUT seconds per run (default 600).
# Exits 0 when every row passes, 1 when any fails, 2 on a setup error.

set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
py=/usr/bin/python3

peer_only=0 keep=0 threads=1
models="resnet18 resnet50 mobilenet_v2 mlp bert"
opsets="13 17"
while [ $# -gt 0 ]; do
    case "$1" in
        --peer-only) peer_only=1 ;;
        --keep) keep=1 ;;
        --threads) threads=${2:?--threads needs N}; shift ;;
        --models) models=${2:?--models needs a list}; shift ;;
        --opsets) opsets=${2:?--opsets needs a list}; shift ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare_models: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done

edgeserve=${EDGESERVE:-build/edgeserve}
case "$edgeserve" in /*) ;; *) edgeserve="$root/$edgeserve" ;; esac
models_dir=${MODELS_DIR:-$root/bench/models/out}
timeout_s=${TIMEOUT:-600}

input_name() { if [ "$1" = bert ]; then echo input_ids; else echo input; fi; }

if [ $peer_only = 0 ] && [ ! -x "$edgeserve" ]; then
    echo "compare_models: no edgeserve binary at $edgeserve (set EDGESERVE, or use --peer-only)" >&2
    exit 2
fi
if [ ! -d "$here/node_modules/onnxruntime-node" ]; then
    "$here/setup" || { echo "compare_models: bench/peer/setup failed" >&2; exit 2; }
fi

missing=0
for m in $models; do
    for f in "${m}_input.pb" "${m}_torch_output.pb" $(for o in $opsets; do echo "${m}_op$o.onnx"; done); do
        [ -f "$models_dir/$f" ] || missing=1
    done
done
if [ $missing = 1 ]; then
    echo "compare_models: generating models into $models_dir" >&2
    # shellcheck disable=SC2086
    "$py" "$root/bench/models/generate.py" "$models_dir" --only $models >&2 ||
        { echo "compare_models: generate.py failed" >&2; exit 2; }
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/edgeserve-compare.XXXXXX")
failed=0
notes=()
if [ $peer_only = 1 ]; then
    cols=("model" "opset" "outputs" "max|ort-torch|" "max|torch|" "ratio" "result" "")
else
    cols=("model" "opset" "outputs" "max|es-ort|" "max|ort|" "ratio" "result" "ort~torch")
fi
# shellcheck disable=SC2059
row() { printf "%-13s %5s %7s %14s %11s %9s %-6s %9s\n" "$@" | sed 's/ *$//'; }
row "${cols[@]}"

for m in $models; do
    in=$(input_name "$m")
    for o in $opsets; do
        model="$models_dir/${m}_op$o.onnx"
        dir="$work/${m}_op$o"
        mkdir -p "$dir"
        row_result="" outs="-" diff="-" ref="-" ratio="-" torch_ratio="-"

        if ! timeout "$timeout_s" node "$here/ort_run.js" "$model" --input "$in=$models_dir/${m}_input.pb" \
                --threads "$threads" --warmup 0 --iters 1 --save-outputs "$dir/ort" \
                >"$dir/ort.log" 2>&1; then
            row_result=ERROR
            notes+=("${m}_op$o: ORT failed: $(tail -n 1 "$dir/ort.log")")
        else
            read -r _ _ _ torch_ratio _ < <("$py" "$here/compare.py" "$dir/ort" \
                "$models_dir/${m}_torch_output.pb" --summary)
        fi

        if [ -z "$row_result" ]; then
            if [ $peer_only = 1 ]; then
                cand="$dir/ort" reference="$models_dir/${m}_torch_output.pb"
                torch_ratio=""
            else
                timeout "$timeout_s" "$edgeserve" run "$model" --input "$in=$models_dir/${m}_input.pb" \
                    --threads "$threads" --warmup 0 --iters 1 --save-outputs "$dir/es" \
                    >"$dir/es.log" 2>&1
                rc=$?
                cand="$dir/es" reference="$dir/ort"
                if [ $rc -ne 0 ]; then
                    row_result=ERROR
                    why="exit $rc"
                    [ $rc -gt 128 ] && [ $rc -ne 255 ] && why="killed by signal $((rc - 128))"
                    [ $rc -eq 124 ] && why="timed out after ${timeout_s}s"
                    notes+=("${m}_op$o: edgeserve $why: $(grep -v '^\s*$' "$dir/es.log" | tail -n 1)")
                fi
            fi
        fi

        if [ -z "$row_result" ]; then
            summary=$("$py" "$here/compare.py" "$cand" "$reference" --summary)
            IFS=$'\t' read -r outs diff ref ratio row_result <<<"$summary"
            if [ "$row_result" != PASS ]; then
                "$py" "$here/compare.py" "$cand" "$reference" >"$dir/compare.txt" 2>&1
                notes+=("${m}_op$o: $(grep -m1 -E 'FAIL|ERROR|compare:' "$dir/compare.txt" || echo "$row_result")")
                row_result=${row_result%% *}
            fi
        fi
        [ "$row_result" = PASS ] || failed=$((failed + 1))
        row "$m" "$o" "$outs" "$diff" "$ref" "$ratio" "$row_result" "$torch_ratio"
    done
done

if [ ${#notes[@]} -gt 0 ]; then
    echo
    printf '%s\n' "${notes[@]}"
fi
echo
if [ $failed -gt 0 ]; then
    echo "$failed row(s) failed; outputs and logs kept in $work"
    exit 1
fi
echo "all rows pass (tolerance: max abs diff <= 1e-4 * max |reference|)"
if [ $keep = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
exit 0

#!/usr/bin/env bash
# Engine overhead benchmark: a no-op `tureen run` of a 4-stage command pipeline against
# `dvc repro` and `snakemake -c1` on the same pipeline, then the first run, the first
# no-op after it, and steady no-op runs of generated 1,000- and 10,000-stage DAGs.
# Prints a table of medians (RUNS runs each, after a warm-up). With BEFORE set to an
# older tureen binary, every tureen row is measured for both in the same run and the
# table gains a ratio column (after / before): these machines are noisy, so compare
# within one run, never across runs.
#
#   bench/engine/run.sh                          # target/release/tureen only
#   BEFORE=/path/to/old/tureen RUNS=9 bench/engine/run.sh
#   SIZES="1000" bench/engine/run.sh             # skip the 10,000-stage DAG
#
# DVC and Snakemake come from a throwaway venv (VENV, default /work/venv-bench), created
# with pip on first use; the comparison is skipped if they cannot be installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
TUREEN=$(realpath "${TUREEN:-$repo/target/release/tureen}")
BEFORE=${BEFORE:+$(realpath "$BEFORE")}
RUNS=${RUNS:-7}
SIZES=${SIZES:-1000 10000}
VENV=${VENV:-/work/venv-bench}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
timeit() { python3 "$here/timeit.py" "$RUNS" "$@"; }
cputime() { python3 "$here/timeit.py" --cpu "$RUNS" "$@"; }
ms_since() { python3 -c "import sys; print(f'{($(date +%s.%N) - $1) * 1000:.0f}')"; }

if [ ! -x "$VENV/bin/dvc" ] || [ ! -x "$VENV/bin/snakemake" ]; then
  (python3 -m venv "$VENV" && "$VENV/bin/pip" install -q dvc snakemake) >/dev/null 2>&1 || true
fi

# --- the same 4-stage pipeline for every tool: gen -> (left, right) -> join ---
small_pipeline() {
  mkdir -p "$1"
  cat > "$1/p.yaml" <<'YAML'
tureen: 1
stages:
  gen:
    kind: command
    cmd: seq 1 1000 > gen.txt
    outs: [gen.txt]
  left:
    kind: command
    cmd: head -n 500 gen.txt > left.txt
    deps: [gen.txt]
    outs: [left.txt]
  right:
    kind: command
    cmd: tail -n 500 gen.txt > right.txt
    deps: [gen.txt]
    outs: [right.txt]
  join:
    kind: command
    cmd: cat left.txt right.txt > join.txt
    deps: [left.txt, right.txt]
    outs: [join.txt]
YAML
}
mkdir -p "$work/dvc" "$work/snakemake"
cat > "$work/dvc/dvc.yaml" <<'YAML'
stages:
  gen:
    cmd: seq 1 1000 > gen.txt
    outs: [gen.txt]
  left:
    cmd: head -n 500 gen.txt > left.txt
    deps: [gen.txt]
    outs: [left.txt]
  right:
    cmd: tail -n 500 gen.txt > right.txt
    deps: [gen.txt]
    outs: [right.txt]
  join:
    cmd: cat left.txt right.txt > join.txt
    deps: [left.txt, right.txt]
    outs: [join.txt]
YAML
cat > "$work/snakemake/Snakefile" <<'SMK'
rule all:
    input: "join.txt"
rule gen:
    output: "gen.txt"
    shell: "seq 1 1000 > gen.txt"
rule left:
    input: "gen.txt"
    output: "left.txt"
    shell: "head -n 500 gen.txt > left.txt"
rule right:
    input: "gen.txt"
    output: "right.txt"
    shell: "tail -n 500 gen.txt > right.txt"
rule join:
    input: "left.txt", "right.txt"
    output: "join.txt"
    shell: "cat left.txt right.txt > join.txt"
SMK

# rows[i] = label; vals[<bin>:i] = value. Rows are added in the order measured.
declare -a rows=()
declare -A vals=()
row() { # row BIN LABEL VALUE
  local i found=
  for i in "${!rows[@]}"; do
    if [ "${rows[$i]}" = "$2" ]; then found=$i; break; fi
  done
  if [ -z "$found" ]; then rows+=("$2"); found=$((${#rows[@]} - 1)); fi
  vals["$1:$found"]=$3
}

# Every tureen row, for the binary $2 under the tag $1.
measure() {
  local tag=$1 bin=$2 dir="$work/$1"
  small_pipeline "$dir/small"
  export TUREEN_STORE="$dir/small/.tureen"
  "$bin" -q run "$dir/small/p.yaml" >/dev/null
  row "$tag" "tureen --version (process start only)" "$(timeit "$dir/small" "$bin" --version)"
  row "$tag" "tureen run, 4-stage no-op (target < 20)" "$(timeit "$dir/small" "$bin" -q run p.yaml)"
  row "$tag" "  4-stage no-op, engine only (after start-up)" \
    "$(python3 "$here/engine_time.py" "$RUNS" "$dir/small" "$bin" -v run --plain p.yaml)"
  row "$tag" "tureen status, 4 stages" "$(timeit "$dir/small" "$bin" -q status p.yaml)"
  local n big start
  for n in $SIZES; do
    big="$dir/big$n"
    python3 "$here/gen_dag.py" "$n" "$big"
    export TUREEN_STORE="$big/.tureen"
    start=$(date +%s.%N)
    "$bin" -q run "$big/big.yaml" -j 2 >/dev/null
    row "$tag" "tureen run, $n-stage first run (-j 2, once)" "$(ms_since "$start")"
    start=$(date +%s.%N)
    "$bin" -q run "$big/big.yaml" >/dev/null
    row "$tag" "tureen run, $n-stage first no-op after it (once)" "$(ms_since "$start")"
    row "$tag" "tureen run, $n-stage no-op (target < 300 at 10,000)" "$(timeit "$big" "$bin" -q run big.yaml)"
    row "$tag" "  $n-stage no-op, CPU time (user + system)" "$(cputime "$big" "$bin" -q run big.yaml)"
    row "$tag" "  $n-stage no-op, engine only (after start-up)" \
      "$(python3 "$here/engine_time.py" "$RUNS" "$big" "$bin" -v run --plain big.yaml)"
    row "$tag" "tureen run --dry-run, $n-stage plan (all cached)" "$(timeit "$big" "$bin" -q run big.yaml --dry-run)"
    row "$tag" "tureen status, $n stages" "$(timeit "$big" "$bin" -q status big.yaml)"
    rm -rf "$big"
  done
}

[ -n "$BEFORE" ] && measure before "$BEFORE"
measure after "$TUREEN"

t_dvc=n/a; t_smk=n/a
if [ -x "$VENV/bin/dvc" ]; then
  (cd "$work/dvc" && "$VENV/bin/dvc" init -q --no-scm && "$VENV/bin/dvc" repro -q >/dev/null 2>&1) &&
    t_dvc=$(timeit "$work/dvc" "$VENV/bin/dvc" repro -q) || t_dvc=failed
fi
if [ -x "$VENV/bin/snakemake" ]; then
  (cd "$work/snakemake" && "$VENV/bin/snakemake" -c1 -q >/dev/null 2>&1) &&
    t_smk=$(timeit "$work/snakemake" "$VENV/bin/snakemake" -c1 -q) || t_smk=failed
fi

echo
if [ -n "$BEFORE" ]; then
  printf '%-54s %10s %10s %7s\n' "benchmark (median of $RUNS, ms)" before after ratio
  printf '%-54s %10s %10s %7s\n' "$(printf -- '-%.0s' {1..54})" ---------- ---------- -------
  for i in "${!rows[@]}"; do
    b=${vals["before:$i"]:-n/a} a=${vals["after:$i"]:-n/a}
    r=$(python3 -c "print(f'{$a / $b:.2f}x')" 2>/dev/null || echo n/a)
    printf '%-54s %10s %10s %7s\n' "${rows[$i]}" "$b" "$a" "$r"
  done
else
  printf '%-54s %10s\n' "benchmark (median of $RUNS, ms)" time
  printf '%-54s %10s\n' "$(printf -- '-%.0s' {1..54})" ----------
  for i in "${!rows[@]}"; do printf '%-54s %10s\n' "${rows[$i]}" "${vals["after:$i"]:-n/a}"; done
fi
printf '%-54s %10s\n' "dvc repro, 4-stage no-op" "$t_dvc"
printf '%-54s %10s\n' "snakemake -c1, 4-stage no-op" "$t_smk"

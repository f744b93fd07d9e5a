#!/usr/bin/env bash
# Engine overhead benchmark: a no-op `tureen run` of a 4-stage command pipeline against
# `dvc repro` and `snakemake -c1` on the same pipeline, then the first run, the first
# no-op after it, and steady no-op runs of generated 1,000- and 10,000-stage DAGs.
# Prints a table of medians (RUNS runs each, after a warm-up; FIRST first runs). With
# BEFORE set to an older tureen binary, every tureen row is measured for both binaries
# in turns (before, after, after, before, ...) and the table gains a ratio column
# (after / before): these machines are noisy, so compare within one run, never across
# runs.
#
#   bench/engine/run.sh                          # target/release/tureen only
#   BEFORE=/path/to/old/tureen RUNS=9 bench/engine/run.sh
#   SIZES="1000" FIRST=5 bench/engine/run.sh     # skip the 10,000-stage DAG
#
# DVC and Snakemake come from a throwaway venv (VENV, default /work/venv-bench), created
# with pip on first use; the comparison is skipped if they cannot be installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
TUREEN=$(realpath "${TUREEN:-$repo/target/release/tureen}")
BEFORE=${BEFORE:+$(realpath "$BEFORE")}
RUNS=${RUNS:-7}
FIRST=${FIRST:-1}
SIZES=${SIZES:-1000 10000}
VENV=${VENV:-/work/venv-bench}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
timeit() { python3 "$here/timeit.py" "$RUNS" "$@"; }
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

# Tags and binaries: "after" alone, or "before" and "after" measured in turns.
tags=(after); declare -A bin=([after]=$TUREEN)
if [ -n "$BEFORE" ]; then tags=(before after); bin[before]=$BEFORE; fi

# rows[i] = label; vals[<tag>:i] = value. Rows are added in the order measured.
declare -a rows=()
declare -A vals=()
row() { # row TAG LABEL VALUE
  local i found=
  for i in "${!rows[@]}"; do
    if [ "${rows[$i]}" = "$2" ]; then found=$i; break; fi
  done
  if [ -z "$found" ]; then rows+=("$2"); found=$((${#rows[@]} - 1)); fi
  vals["$1:$found"]=$3
}

# each LABEL MODE SUBDIR ARGS...: one row, every tag's binary run in turns (timeit.py)
# with ARGS in $work/TAG/SUBDIR against that folder's store.
each() {
  local label=$1 mode=$2 sub=$3 tag groups=() medians
  shift 3
  for tag in "${tags[@]}"; do
    [ ${#groups[@]} -gt 0 ] && groups+=(::)
    groups+=("$work/$tag/$sub" "TUREEN_STORE=$work/$tag/$sub/.tureen" "${bin[$tag]}" "$@")
  done
  read -r -a medians <<< "$(python3 "$here/timeit.py" $mode "$RUNS" "${groups[@]}")"
  for i in "${!tags[@]}"; do row "${tags[$i]}" "$label" "${medians[$i]}"; done
}

# first_runs N: the first run of the N-stage DAG, then the first no-op after it, FIRST
# times per tag in fresh folders, tags in turns; rows get the medians. The last
# repetition's folder stays for the steady rows.
first_runs() {
  local n=$1 k tag start order
  declare -A first=() noop=()
  for ((k = 0; k < FIRST; k++)); do
    order=("${tags[@]}")
    [ $((k % 2)) = 1 ] && order=($(printf '%s\n' "${tags[@]}" | tac))
    for tag in "${order[@]}"; do
      rm -rf "$work/$tag/big$n"
      python3 "$here/gen_dag.py" "$n" "$work/$tag/big$n"
      cd "$work/$tag/big$n"
      start=$(date +%s.%N)
      TUREEN_STORE=$PWD/.tureen "${bin[$tag]}" -q run big.yaml -j 2 >/dev/null
      first[$tag]+="$(ms_since "$start") "
      start=$(date +%s.%N)
      TUREEN_STORE=$PWD/.tureen "${bin[$tag]}" -q run big.yaml >/dev/null
      noop[$tag]+="$(ms_since "$start") "
      cd - >/dev/null
    done
  done
  for tag in "${tags[@]}"; do
    row "$tag" "tureen run, $n-stage first run (-j 2, median of $FIRST)" "$(median ${first[$tag]})"
    row "$tag" "tureen run, $n-stage first no-op after it" "$(median ${noop[$tag]})"
  done
}
median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.0f}')" "$@"; }

for tag in "${tags[@]}"; do
  small_pipeline "$work/$tag/small"
  (cd "$work/$tag/small" && TUREEN_STORE=$PWD/.tureen "${bin[$tag]}" -q run p.yaml >/dev/null)
done
each "tureen --version (process start only)" "" small --version
each "tureen run, 4-stage no-op (target < 20)" "" small -q run p.yaml
each "  4-stage no-op, engine only (after start-up)" --engine small -v run --plain p.yaml
each "tureen status, 4 stages" "" small -q status p.yaml
for n in $SIZES; do
  first_runs "$n"
  each "tureen run, $n-stage no-op (target < 300 at 10,000)" "" "big$n" -q run big.yaml
  each "  $n-stage no-op, CPU time (user + system)" --cpu "big$n" -q run big.yaml
  each "  $n-stage no-op, engine only (after start-up)" --engine "big$n" -v run --plain big.yaml
  each "tureen run --dry-run, $n-stage plan (all cached)" "" "big$n" -q run big.yaml --dry-run
  each "tureen status, $n stages" "" "big$n" -q status big.yaml
  for tag in "${tags[@]}"; do rm -rf "$work/$tag/big$n"; done
done

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

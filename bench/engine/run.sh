#!/usr/bin/env bash
# Engine overhead benchmark: a no-op `tureen run` of a 4-stage command pipeline against
# `dvc repro` and `snakemake -c1` on the same pipeline, then planning and no-op running
# a generated 1,000-stage DAG. Prints a table of medians (RUNS runs each, after a
# warm-up).
#
#   bench/engine/run.sh                     # uses target/release/tureen
#   TUREEN=/path/to/tureen RUNS=9 bench/engine/run.sh
#
# DVC and Snakemake come from a throwaway venv (VENV, default /work/venv-bench), created
# with pip on first use; the comparison is skipped if they cannot be installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
TUREEN=$(realpath "${TUREEN:-$repo/target/release/tureen}")
RUNS=${RUNS:-7}
N=${N:-1000}
VENV=${VENV:-/work/venv-bench}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
timeit() { python3 "$here/timeit.py" "$RUNS" "$@"; }

if [ ! -x "$VENV/bin/dvc" ] || [ ! -x "$VENV/bin/snakemake" ]; then
  (python3 -m venv "$VENV" && "$VENV/bin/pip" install -q dvc snakemake) >/dev/null 2>&1 || true
fi

# --- the same 4-stage pipeline for every tool: gen -> (left, right) -> join ---
mkdir -p "$work/tureen" "$work/dvc" "$work/snakemake"
cat > "$work/tureen/p.yaml" <<'YAML'
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

export TUREEN_STORE="$work/tureen/.tureen"
"$TUREEN" -q run "$work/tureen/p.yaml" >/dev/null
t_tureen=$(timeit "$work/tureen" "$TUREEN" -q run p.yaml)
e_tureen=$(python3 "$here/engine_time.py" "$RUNS" "$work/tureen" "$TUREEN" -v run --plain p.yaml)
t_status=$(timeit "$work/tureen" "$TUREEN" -q status p.yaml)
t_version=$(timeit "$work/tureen" "$TUREEN" --version)

t_dvc=n/a; t_smk=n/a
if [ -x "$VENV/bin/dvc" ]; then
  (cd "$work/dvc" && "$VENV/bin/dvc" init -q --no-scm && "$VENV/bin/dvc" repro -q >/dev/null 2>&1) &&
    t_dvc=$(timeit "$work/dvc" "$VENV/bin/dvc" repro -q) || t_dvc=failed
fi
if [ -x "$VENV/bin/snakemake" ]; then
  (cd "$work/snakemake" && "$VENV/bin/snakemake" -c1 -q >/dev/null 2>&1) &&
    t_smk=$(timeit "$work/snakemake" "$VENV/bin/snakemake" -c1 -q) || t_smk=failed
fi

# --- a generated N-stage DAG ---
mkdir -p "$work/big"
python3 "$here/gen_dag.py" "$N" "$work/big"
export TUREEN_STORE="$work/big/.tureen"
first_start=$(date +%s.%N)
"$TUREEN" -q run "$work/big/big.yaml" -j 2 >/dev/null
first=$(python3 -c "print(f'{($(date +%s.%N) - $first_start) * 1000:.0f}')")
t_plan=$(timeit "$work/big" "$TUREEN" -q run big.yaml --dry-run)
t_big=$(timeit "$work/big" "$TUREEN" -q run big.yaml)
e_big=$(python3 "$here/engine_time.py" "$RUNS" "$work/big" "$TUREEN" -v run --plain big.yaml)
t_big_status=$(timeit "$work/big" "$TUREEN" -q status big.yaml)

printf '\n%-48s %12s\n' "benchmark (median of $RUNS, ms)" "time"
printf '%-48s %12s\n' "------------------------------------------------" "------------"
printf '%-48s %12s\n' "tureen --version (process start only)" "$t_version"
printf '%-48s %12s   (target < 20)\n' "tureen run, 4-stage no-op" "$t_tureen"
printf '%-48s %12s\n' "  of which engine (in-process, after start-up)" "$e_tureen"
printf '%-48s %12s\n' "tureen status, 4 stages" "$t_status"
printf '%-48s %12s\n' "dvc repro, 4-stage no-op" "$t_dvc"
printf '%-48s %12s\n' "snakemake -c1, 4-stage no-op" "$t_smk"
printf '%-48s %12s\n' "tureen run, $N-stage first run (-j 2, once)" "$first"
printf '%-48s %12s\n' "tureen run --dry-run, $N-stage plan (all cached)" "$t_plan"
printf '%-48s %12s   (target < 300)\n' "tureen run, $N-stage no-op" "$t_big"
printf '%-48s %12s\n' "  of which engine (in-process, after start-up)" "$e_big"
printf '%-48s %12s\n' "tureen status, $N stages" "$t_big_status"

#!/bin/bash
# Run the textbook's own chapter scripts twice, on its common/ and on nprnn.dlfs2, one BLAS thread each.
#   bash benchmarks/book_scripts.sh PATH/TO/deep-learning-from-scratch-2 [WORKDIR]
# The book's repository is copied into WORKDIR twice (default /tmp/book_scripts); in the second copy
# `common.` becomes `nprnn.dlfs2.` in the chapter scripts' imports, its common/ is removed, and PTB
# comes from ../shared/data/ptb. The long scripts are cut to one epoch on both sides alike.
set -u
REPO=$1
WORK=${2:-/tmp/book_scripts}
HERE=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$WORK" && mkdir -p "$WORK"
for side in book nprnn; do
  mkdir -p "$WORK/$side"
  git -C "$REPO" archive HEAD ch05 ch06 ch07 ch08 dataset common | tar -x -C "$WORK/$side"
  cp "$HERE"/../shared/data/ptb/ptb.*.txt "$WORK/$side/dataset/"
  sed -i 's/^max_epoch = 4$/max_epoch = 1/' "$WORK/$side/ch06/train_rnnlm.py"
  sed -i 's/^max_epoch = 25$/max_epoch = 1/' "$WORK/$side/ch07/train_seq2seq.py"
  sed -i 's/^max_epoch = 10$/max_epoch = 1/' "$WORK/$side/ch08/train.py"
done
rm -rf "$WORK/nprnn/common"
sed -i -e 's/\bcommon\./nprnn.dlfs2./g' -e 's/^from common import/from nprnn.dlfs2 import/' "$WORK"/nprnn/ch0[5-8]/*.py
export OPENBLAS_NUM_THREADS=1 MPLBACKEND=Agg
python "$HERE/benchmarks/machine.py"
echo "| script | book s | nprnn.dlfs2 s | speed-up | book rc | nprnn rc |"
echo "|---|---:|---:|---:|---|---|"
for script in ch05/train_custom_loop.py ch05/train.py ch06/eval.py ch06/train_rnnlm.py ch07/train_seq2seq.py \
              ch08/train.py ch08/visualize_attention.py; do
  declare -A secs rcs
  for side in book nprnn; do
    dir="$WORK/$side/$(dirname $script)"
    start=$(date +%s.%N)
    # ch08 imports ch07's modules by their bare names, as when run from the book's repository root setup
    (cd "$dir" && PYTHONPATH=../ch07 timeout 1800 python "$(basename $script)" > "$WORK/$side.${script//\//_}.log" 2>&1)
    rcs[$side]=$?
    secs[$side]=$(echo "$(date +%s.%N) - $start" | bc)
  done
  printf "| %s | %.1f | %.1f | %.2fx | %s | %s |\n" "$script" "${secs[book]}" "${secs[nprnn]}" \
    "$(echo "${secs[book]} / ${secs[nprnn]}" | bc -l)" "${rcs[book]}" "${rcs[nprnn]}"
done
echo "logs: $WORK/{book,nprnn}.*.log"

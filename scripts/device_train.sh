#!/bin/bash
# One call on a lent GPU machine (see the training section of the README): train one or more
# arms at once from the training pack, then bring each arm's weights and logs back under $OUT.
#
# Before the call, on the development machine (the machine has no internet and lacks two
# dependencies, so their wheels travel with the working tree):
#   python scripts/make_training_pack.py ../shared/data/train .pack --mib 47
#   pip download constriction pytorch-msssim --only-binary=:all: --no-deps \
#       --python-version 3.12 --platform manylinux2014_x86_64 -d .whl
# then run it with carry [".pack", ".whl"]. Environment variables set what the arms share
# (the defaults: stage 12's recipe, see the model card); each argument is one arm's own
# settings, and the arms train side by side on the one GPU (two width-0.25 arms ran at
# 180–215 patches/s each, the GPU 96–100% busy); no argument, one arm. Stage 12's first call:
#   INIT=rgru-rs-w25 bash scripts/device_train.sh "--set lr=2e-4" "--set lr=5e-4 --set seed=1"
# and afterwards, here, for arm N (a, b, ...):
#   cat <files_at>/N.part* > N.pt  # N.safetensors with CKPT=false
#   rnncodec export N.pt -o NAME.safetensors
#
# A WIDTH above INIT's grows those weights into the wider model, which starts from what they
# compute (`frameworks.grow`), e.g. WIDTH=0.5 INIT=rgru-rs-w25 (16.9 MB fp16), or WIDTH=0.6, the
# widest under the 25 MB (24.3 MB). On the 2-core CPU a training step of width 0.5 took
# 2.7 times as long per patch as width 0.25, width 0.6 3.9 times (train_throughput.py, 32-px
# patches); on a GPU, unmeasured.
# BINARIZE=sign (the default) trains on the bits that coding uses; "stochastic" is the paper's
# random bits, for a model from scratch (see docs/training-log.md, stages 2 and 3). PATCH sets the
# crop size; the bank holds BANK × 3 × PATCH² bytes on the GPU per arm, so scale BANK down
# with it (3,000,000 at 32 px is 9.2 GB; 100,000 at 128 px is 4.9 GB). MS_SSIM adds that
# weight × (1 − MS-SSIM) to the L1 loss (PATCH ≥ 48 px).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT to a folder for the results}
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

minutes=${MINUTES:-8}
common=(--data .pack --set width=${WIDTH:-0.25} --set patch=${PATCH:-128} --set batch=${BATCH:-32}
        --set bank=${BANK:-100000} --set warmup=${WARMUP:-50} --set steps=1000000
        --set val_every=${VAL_EVERY:-200} --set amp=${AMP:-false} --set ms_ssim=${MS_SSIM:-3}
        --set lr=${LR:-5e-4} --set minutes=$minutes --set init=${INIT:-}
        --set binarize=${BINARIZE:-sign} --set iterations=${ITERATIONS:-8})
[ $# -eq 0 ] && set -- ""
names=(a b c d e f)
# the clock starts after loading the photos (half a minute): a stuck arm is stopped in time
# to bring back what the others made, and its log
limit=$(python3 -c "print(round($minutes * 60 + 100))")
for i in $(seq 0 $(($# - 1))); do
    arm=${names[$i]}
    args=(${@:$((i + 1)):1})  # this arm's own --set options, split on spaces
    rm -rf /tmp/$arm  # a warm machine keeps /tmp: never resume or return an earlier call's arm
    timeout $limit python3 -c "from rnncodec.cli import main; main()" train --out /tmp/$arm \
        "${common[@]}" "${args[@]}" > "$OUT/$arm.log" 2>&1 &
done
wait
for i in $(seq 0 $(($# - 1))); do
    arm=${names[$i]}
    cp /tmp/$arm/log.csv "$OUT/$arm-log.csv" 2>/dev/null
    # the device returns files of at most 16 MiB, so the checkpoint (fp32 weights and Adam's
    # moments, written at every validation: an arm stopped by the timeout still has one) comes
    # back in parts; CKPT=false brings the fp16 weights instead (fewer bytes, no moments)
    if [ "${CKPT:-true}" = true ]; then w=/tmp/$arm/checkpoint.pt; else w=/tmp/$arm/model.safetensors; fi
    [ -f $w ] && split -b 15M -d $w "$OUT/$arm.part"
    tail -n 3 "$OUT/$arm.log"
done
ls -la "$OUT"

#!/usr/bin/env bash
# The whole ru-commands pipeline in one command (see README.md):
#   tools/asr_train/train.sh --smoke [--work DIR]   ~30 utterances, one short epoch, tiny model: checks the pipeline
#   tools/asr_train/train.sh --full  [--work DIR]   the real run (hours on 2 cores); then copy DIR/export/ to models/
#   tools/asr_train/train.sh --festival-eval [--work DIR] [--model-dir models/ru-commands]
#       no training: the model in --model-dir on Festival's renderings of the held-out phrases (a synthesiser it never
#       heard), ~6 min; rewrites the card's Festival section (card.py --section festival) when --model-dir is
#       models/ru-commands. Needs festival festvox-ru (Debian); skipped with a message without them.
# Environment: TRAIN_PY (python with torch, kaldi-native-fbank, onnx, onnxruntime, sherpa-onnx; default
# /work/trainvenv/bin/python or python3), BOX_PY (the box's venv, for the evaluation through its own loader;
# default .venv/bin/python, /work/venv/bin/python or python3). Every stage runs under nice -n 19; training uses THREADS (2) threads.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=smoke
work=""
model_dir=models/ru-commands
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) mode=smoke ;;
        --full) mode=full ;;
        --festival-eval) mode=festival-eval ;;
        --work) work=$2; shift ;;
        --model-dir) model_dir=$2; shift ;;
        *) echo "usage: $0 --smoke|--full|--festival-eval [--work DIR] [--model-dir DIR]" >&2; exit 2 ;;
    esac
    shift
done
work=${work:-build/asr_train/$mode}
pick() { for p in "$@"; do if [ -x "$p" ] || command -v "$p" >/dev/null 2>&1; then echo "$p"; return; fi; done; }
TRAIN_PY=${TRAIN_PY:-$(pick /work/trainvenv/bin/python python3)}
BOX_PY=${BOX_PY:-$(pick .venv/bin/python /work/venv/bin/python python3)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
run() { echo "+ $*" >&2; nice -n 19 "$@"; }
mkdir -p "$work"
start=$(date +%s)
if [ "$mode" = smoke ]; then
    run "$TRAIN_PY" -m tools.asr_train.vocab --flows ivr_flows --out "$work/phrases.jsonl" --numbers 20 --limit 15
    run "$TRAIN_PY" -m tools.asr_train.synth --phrases "$work/phrases.jsonl" --out "$work/clips" --variants 2
    run "$TRAIN_PY" -m tools.asr_train.train --clips "$work/clips" --out "$work/run" --size smoke --epochs 1 \
        --batch-frames 2000
    run "$TRAIN_PY" -m tools.asr_train.export --ckpt "$work/run/last.pt" --out "$work/export" --clips "$work/clips" \
        --n-check 20
    run "$BOX_PY" -m tools.asr_train.evaluate --model-dir "$work/export" --clips "$work/clips" --limit 10 \
        --out "$work/eval.json"
    run "$BOX_PY" -m tools.asr_train.card --work "$work" --out "$work/MODEL_CARD.md"
elif [ "$mode" = festival-eval ]; then
    # The same held-out phrases as --full (vocab is deterministic), each once in Festival's own voice; none trained.
    run "$BOX_PY" -m tools.asr_train.vocab --flows ivr_flows --out "$work/phrases.jsonl" --numbers 1500
    run "$BOX_PY" -m tools.asr_train.synth --phrases "$work/phrases.jsonl" --out "$work/clips" --engines "" \
        --held-out-engines festival --split test
    if ! grep -q '"festival:' "$work/clips/clips.jsonl"; then
        echo "festival-eval: no Festival clips (is festival festvox-ru installed?): nothing to evaluate" >&2
        exit 0
    fi
    run "$BOX_PY" -m tools.asr_train.evaluate --model-dir "$model_dir" --clips "$work/clips" --engine festival \
        --out "$work/eval_festival.json"
    if [ "$model_dir" = models/ru-commands ]; then
        run "$BOX_PY" -m tools.asr_train.card --section festival --eval "$work/eval_festival.json" \
            --card models/ru-commands/MODEL_CARD.md
    fi
else
    run "$TRAIN_PY" -m tools.asr_train.vocab --flows ivr_flows --out "$work/phrases.jsonl" --numbers 1500
    # Short answers get many voices/speeds/pitches (30 renderings), the long number phrases 6: menu answers, yes/no
    # and keys would otherwise be 4 % of the audio. Festival (when installed: skipped with a message otherwise) adds
    # a quarter as many again in its one recorded voice, at several tempi and pitches (ENGINES to change).
    run "$TRAIN_PY" -m tools.asr_train.synth --phrases "$work/phrases.jsonl" --out "$work/clips" --variants 6 \
        --kind-variants "menu=30,yesno=30,key=30,free=20" --engines "${ENGINES:-espeak,festival=0.25}"
    # A: two epochs from scratch (~23 min each here, one training thread plus one augmenting process).
    run "$TRAIN_PY" -m tools.asr_train.train --clips "$work/clips" --out "$work/run" --size full \
        --epochs "${EPOCHS_A:-2}" --threads 1 --workers 1 --lr 2e-3 --mix "number=0.5,date=0.5"
    # B: one more epoch at a lower peak LR.
    run "$TRAIN_PY" -m tools.asr_train.train --clips "$work/clips" --out "$work/run2" --size full --epochs 1 \
        --threads 1 --workers 1 --lr 1e-3 --init "$work/run/last.pt" --mix "number=0.5,date=0.5"
    # C: rebalanced towards the short answers (menu, yes/no, keys, free phrases twice, long numbers a third) on a
    # wall-time budget (MINUTES, default 42): the LR schedule follows the clock, so it ends annealed.
    run "$TRAIN_PY" -m tools.asr_train.train --clips "$work/clips" --out "$work/run3" --size full --epochs 40 \
        --minutes "${MINUTES:-42}" --threads 1 --workers 1 --lr 1e-3 --init "$work/run2/last.pt" \
        --mix "menu=2,yesno=2,key=2,free=2,phone=0.35,number=0.3,date=0.3,time=0.5"
    run "$TRAIN_PY" -m tools.asr_train.export --ckpt "$work/run3/last.pt" --out "$work/export" --clips "$work/clips"
    run "$BOX_PY" -m tools.asr_train.evaluate --model-dir "$work/export" --clips "$work/clips" --engine espeak \
        --out "$work/eval.json"
    # Festival's test renderings (held-out tempo/pitch) apart, so eval.json stays comparable with earlier runs.
    if grep -q '"festival:' "$work/clips/clips.jsonl"; then
        run "$BOX_PY" -m tools.asr_train.evaluate --model-dir "$work/export" --clips "$work/clips" --engine festival \
            --out "$work/eval_festival.json"
    fi
    # Fresh renderings of the short answers (other seeds' voice/speed/pitch draws of the held-out split), never
    # looked at while setting the spotting thresholds (speech/sherpa.py SPOT_*): the card reports both.
    for seed in 2 3 4; do
        run "$TRAIN_PY" -m tools.asr_train.synth --phrases "$work/phrases.jsonl" --out "$work/fresh$seed" \
            --variants 6 --kind-variants "menu=30,yesno=30,key=30,free=20" --seed "$seed" --split test \
            --kinds menu,free,yesno,key
    done
    run "$BOX_PY" -m tools.asr_train.evaluate --model-dir "$work/export" --clips "$work/fresh2" \
        --also "$work/fresh3" --also "$work/fresh4" --unlike "$work/clips" --out "$work/eval_fresh.json"
    run "$BOX_PY" -m tools.asr_train.card --work "$work" --out "$work/MODEL_CARD.md"
    echo "full run done: review $work/eval.json and $work/MODEL_CARD.md, then copy $work/export/{model.int8.onnx," \
         "tokens.txt} and the card to models/ru-commands/ and pin the two sha256 (in the card) in models/manifest.yaml"
fi
echo "asr_train $mode: $(( $(date +%s) - start )) s wall in $work" >&2

#!/usr/bin/env bash
# Quick end-to-end check of batch inference (scripts/parallel_inference_hf_lora.py) on 1 or N processes.
#
#   bash scripts/test_parallel_inference.sh [BASE_MODEL] [LORA_PATH] [DATA_PATH] [NPROC]
#   bash scripts/test_parallel_inference.sh out/models/SmolLM2-135M-Instruct none "" 2
#   bash scripts/test_parallel_inference.sh <model folder> out/lora/hf_lora_hf_final.pth dataset/test.jsonl 8
#
# Arguments (or the environment variables of the same name; an argument wins):
#   BASE_MODEL  Hugging Face model folder (default out/models/SmolLM2-135M-Instruct, see scripts/fetch_smollm2.py)
#   LORA_PATH   adapter (.pth, .safetensors or PEFT folder); "none" or "" = the base model alone (default)
#   DATA_PATH   input JSONL; "" = a small file with every input format, written to OUT_DIR (default)
#   NPROC       processes; > 1 also runs torchrun with NPROC processes and checks that its output is
#               byte-identical to the 1-process output (default 1)
# Other settings: PYTHON (default .venv/bin/python if present, else python), OUT_DIR
# (default out/test_parallel_inference), MAX_NEW_TOKENS (16), BATCH_SIZE (4), EXTRA_ARGS (more flags for
# both runs, e.g. "--branch_stride 0" or "--no_patch_rope"). On CPU both runs use one thread per process,
# so that they compute every batch in the same floating-point order.
# Exit status: 0 when every check passed; non-zero (and a message) otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_MODEL=${1:-${BASE_MODEL:-out/models/SmolLM2-135M-Instruct}}
LORA_PATH=${2-${LORA_PATH:-none}}
DATA_PATH=${3-${DATA_PATH:-}}
NPROC=${4:-${NPROC:-1}}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
OUT_DIR=${OUT_DIR:-out/test_parallel_inference}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-16}
BATCH_SIZE=${BATCH_SIZE:-4}
EXTRA_ARGS=${EXTRA_ARGS:-}

say() { echo "[test_parallel_inference] $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

[[ -e "$BASE_MODEL" ]] || fail "base model $BASE_MODEL does not exist (fetch SmolLM2 with scripts/fetch_smollm2.py, or pass a folder)"
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || fail "NPROC must be a positive integer, got '$NPROC'"
mkdir -p "$OUT_DIR"

if [[ -z "$DATA_PATH" ]]; then
  DATA_PATH="$OUT_DIR/input.jsonl"
  cat > "$DATA_PATH" <<'EOF'
{"id": "ctx", "main": "Big Ben is the bell of the clock tower of the Palace of Westminster in London.", "branches": ["In which city is Big Ben?", "What is Big Ben?"]}
{"id": "pair", "branches": ["What is the capital of France?", "How many legs does a spider have?"]}
{"id": "t1", "text": "Write one sentence about the sea."}
{"id": "t2", "text": "Name a primary colour."}
{"id": "t3", "text": "What is 12 times 7?"}
{"id": "t4", "text": "Give a synonym of quick."}
{"id": "t5", "text": "Say hello in French."}
EOF
fi
[[ -f "$DATA_PATH" ]] || fail "data file $DATA_PATH does not exist"

MODEL_ARGS=(--base_model "$BASE_MODEL")
if [[ -n "$LORA_PATH" && "$LORA_PATH" != "none" ]]; then MODEL_ARGS+=(--lora_path "$LORA_PATH"); fi
# shellcheck disable=SC2206  # EXTRA_ARGS is a list of flags on purpose
COMMON=("${MODEL_ARGS[@]}" --data_path "$DATA_PATH" --max_new_tokens "$MAX_NEW_TOKENS" --batch_size "$BATCH_SIZE"
        --overwrite $EXTRA_ARGS)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false

check_output() {  # every input record has an output record, in order, with an output for every branch
  "$PYTHON" - "$DATA_PATH" "$1" <<'EOF'
import json, sys
src = [json.loads(x) for x in open(sys.argv[1], encoding="utf-8") if x.strip()]
out = [json.loads(x) for x in open(sys.argv[2], encoding="utf-8") if x.strip()]
assert len(out) == len(src), f"{len(src)} input records but {len(out)} output records"
for i, (a, b) in enumerate(zip(src, out)):
    for k, v in a.items():
        assert b.get(k) == v, f"output record {i + 1}: field {k!r} differs from the input"
    if "branches" in a:
        assert len(b["outputs"]) == len(a["branches"]) == len(b["finish_reasons"]), f"record {i + 1}: outputs"
        assert all(isinstance(t, str) for t in b["outputs"]), f"record {i + 1}: outputs"
    else:
        assert isinstance(b["output"], str) and b["finish_reason"] in ("eos", "stop", "length"), f"record {i + 1}"
lines = [b["line"] for b in out]
assert lines == sorted(lines) and len(set(lines)) == len(lines), "records out of order or repeated"
print(f"{len(out)} records, {sum(len(b.get('outputs', [0])) for b in out)} outputs")
EOF
}

say "1 process: ${MODEL_ARGS[*]} on $DATA_PATH"
"$PYTHON" scripts/parallel_inference_hf_lora.py "${COMMON[@]}" --out_path "$OUT_DIR/results_1.jsonl"
say "check: $(check_output "$OUT_DIR/results_1.jsonl")"

if (( NPROC > 1 )); then
  say "$NPROC processes (torchrun)"
  "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" scripts/parallel_inference_hf_lora.py \
    "${COMMON[@]}" --out_path "$OUT_DIR/results_$NPROC.jsonl"
  check_output "$OUT_DIR/results_$NPROC.jsonl" > /dev/null
  cmp -s "$OUT_DIR/results_1.jsonl" "$OUT_DIR/results_$NPROC.jsonl" \
    || fail "the $NPROC-process output differs from the 1-process output ($OUT_DIR/results_{1,$NPROC}.jsonl)"
  say "check: the $NPROC-process output is byte-identical to the 1-process output"
fi
say "passed; outputs in $OUT_DIR"

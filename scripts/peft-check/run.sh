#!/usr/bin/env bash
# Trains an LLM LoRA with `lora-scripts train --config` on the llama-tiny fixture, then checks that PEFT's
# PeftModel.from_pretrained loads the adapter and reproduces our logits. Needs a Python with torch,
# transformers and peft: PYTHON=/path/to/venv/bin/python scripts/peft-check/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
base=$(node --import tsx scripts/peft-check/prepare.ts "$work")
node bin/lora-scripts.js train --config "$work/train.yaml" > "$work/train.log" 2>&1 || { cat "$work/train.log"; exit 1; }
adapter="$work/out/adapter"
[ -f "$adapter/adapter_config.json" ] || { echo "no adapter folder at $adapter:"; ls -R "$work/out"; exit 1; }
PEFT_CHECK_MODE=base node --import tsx scripts/peft-check/ours.ts "$base" "$adapter" "$work/base.json"
PEFT_CHECK_MODE=adapted node --import tsx scripts/peft-check/ours.ts "$base" "$adapter" "$work/adapted.json"
"${PYTHON:-python3}" scripts/peft-check/peft_load.py "$base" "$adapter" "$work/base.json" "$work/adapted.json"

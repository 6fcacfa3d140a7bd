"""PEFT's side of the cross-check: load the base model with transformers and the adapter that
`lora-scripts train` wrote with PeftModel.from_pretrained, and compare its logits with ours.py's JSON.
Usage: python peft_load.py MODEL_DIR ADAPTER_DIR OURS_BASE.json OURS_ADAPTED.json   (needs torch, transformers, peft)"""

import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

model_dir, adapter_dir, base_path, adapted_path = sys.argv[1:5]
ours = json.load(open(base_path))
ours["base"] = ours.pop("logits")
ours["adapted"] = json.load(open(adapted_path))["logits"]
ids = torch.tensor(ours["ids"]).reshape(ours["batch"], ours["length"])
base = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
with torch.no_grad():
    base_logits = base(ids).logits.reshape(-1)
peft_model = PeftModel.from_pretrained(base, adapter_dir).eval()
with torch.no_grad():
    peft_logits = peft_model(ids).logits.reshape(-1)

def worst(a, b):
    return float((torch.tensor(a) - b).abs().max())

change = float((peft_logits - base_logits).abs().max())
print(json.dumps({
    "base_max_abs_diff": worst(ours["base"], base_logits),
    "adapted_max_abs_diff": worst(ours["adapted"], peft_logits),
    "adapter_changes_logits_by": change,
    "peft_versions": {"torch": torch.__version__, "peft": __import__("peft").__version__, "transformers": __import__("transformers").__version__},
}))
ok = worst(ours["adapted"], peft_logits) <= 1e-4 + 1e-4 * float(peft_logits.abs().max()) and change > 1e-3
sys.exit(0 if ok else 1)

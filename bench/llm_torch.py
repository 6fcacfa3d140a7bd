"""PyTorch + transformers + peft side of `npm run bench -- llm`: the same random Qwen2-0.5B-shaped folder, the
same work, float32 on CPU. Prints one JSON line.

usage: llm_torch.py MODEL_DIR SEQ TRAIN_STEPS GEN_TOKENS THREADS
"""
import json, sys, time
import torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model

model_dir, seq, steps, gen_tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
model.eval()
vocab = model.config.vocab_size
ids = (torch.arange(seq, dtype=torch.int64) * 7919 + 11) % vocab
ids = ids[None, :]

with torch.no_grad():
    probe = model(ids[:, :16]).logits[0, -1, :8].tolist()

# Generation: greedy, KV cache, a 16-token prompt, exactly GEN_TOKENS new tokens.
with torch.no_grad():
    model.generate(ids[:, :16], max_new_tokens=2, min_new_tokens=2, do_sample=False)
    t = time.perf_counter()
    out = model.generate(ids[:, :16], max_new_tokens=gen_tokens, min_new_tokens=gen_tokens, do_sample=False)
    gen_s = time.perf_counter() - t

# LoRA training: rank 16, alpha 32, on q/k/v/o_proj; AdamW lr 1e-4; batch 1 x SEQ tokens; one warm-up step.
peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0, task_type="CAUSAL_LM"))
peft_model.train()
opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
def step():
    loss = peft_model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()
step()
times = []
for _ in range(steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
best = min(times)
print(json.dumps({
    "torch": torch.__version__,
    "probe_logits": probe,
    "gen_tokens": gen_tokens,
    "gen_seconds": gen_s,
    "gen_tokens_per_s": gen_tokens / gen_s,
    "generated": out[0, 16:].tolist(),
    "train_step_seconds": times,
    "train_tokens_per_s": seq / best,
}))

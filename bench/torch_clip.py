"""PyTorch side of `npm run bench -- clip`: CLIP ViT-L/14's vision tower with random weights (transformers'
CLIPVisionModelWithProjection, fp32, eager attention and SDPA both tried), images per second at batch 1 and
the given batch, plus CLIPImageProcessor on one JPEG. Prints one JSON line.

usage: python bench/torch_clip.py <threads> <jpeg> <batch> <reps> [attention implementations, default sdpa,eager]
"""
import json
import sys
import time

import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

threads, jpeg, batch, reps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
attns = (sys.argv[5] if len(sys.argv) > 5 else "sdpa,eager").split(",")
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")


def best(fn, n):
    fn()
    t = float("inf")
    for _ in range(n):
        s = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - s)
    return t


out = {"torch": torch.__version__, "threads": threads}
for attn in attns:
    cfg._attn_implementation = attn
    model = CLIPVisionModelWithProjection(cfg).eval()
    for b in sorted({1, batch}):
        x = torch.randn(b, 3, 224, 224)
        with torch.inference_mode():
            s = best(lambda: model(pixel_values=x).image_embeds, reps)
        out[f"{attn}_batch{b}_seconds"] = s
        out[f"{attn}_batch{b}_images_per_second"] = b / s
    del model
proc = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
img = Image.open(jpeg)
out["preprocess_seconds"] = best(lambda: proc(images=Image.open(jpeg), return_tensors="pt"), 20)
print(json.dumps(out))

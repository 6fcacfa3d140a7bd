"""lora-scripts for the AUTOMATIC1111 WebUI: the parts that run without A1111.

`client` talks to a lora-scripts server over HTTP, `handoff` puts a finished LoRA into A1111's Lora folder
the way A1111 lists it, `watcher` does that in the background for every training that ends, and `sender`
turns A1111 gallery selections into dataset images. `scripts/lora_scripts.py` wires them into A1111; nothing
here imports gradio or A1111's modules, so all of it runs (and is tested) against a real server alone.
"""

DEFAULT_URL = "http://127.0.0.1:7861"

"""A finished LoRA into A1111's Lora folder, the way A1111 lists it.

A1111's Lora extension shows `<name>.safetensors` with `<name>.preview.png` as its card image and reads the
card's user metadata from `<name>.json` ("description", "sd version", "activation text", "preferred weight",
"notes"). We write all three, each atomically, so A1111 never lists half a file; a file that is already there
and identical is left alone, and a different file of the same name is never overwritten unless asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass

from .client import Client, LoraScriptsError, write_bytes_atomic

# kohya's ss_base_model_version values → A1111's "sd version" choices.
_SD_VERSION = {"sd_v1": "SD1", "sd_v2": "SD2", "sd_v2_768_v": "SD2", "sdxl_base_v1-0": "SDXL"}
_SAFE_NAME = re.compile(r"^[^/\\\0]{1,200}$")


@dataclass
class Installed:
    name: str
    path: str
    preview: str | None
    metadata: str
    replaced: bool
    unchanged: bool


def sd_version(metadata: dict) -> str:
    base = str(metadata.get("ss_base_model_version", ""))
    if base in _SD_VERSION:
        return _SD_VERSION[base]
    if str(metadata.get("ss_v2", "")).lower() == "true":
        return "SD2"
    return "Unknown"


def activation_text(metadata: dict, limit: int = 3) -> str:
    """The tags that most training captions share (kohya's ss_tag_frequency), most frequent first."""
    freq = metadata.get("ss_tag_frequency")
    if isinstance(freq, str):
        try:
            freq = json.loads(freq)
        except ValueError:
            freq = None
    counts: dict[str, int] = {}
    if isinstance(freq, dict):
        for folder in freq.values():
            if isinstance(folder, dict):
                for tag, n in folder.items():
                    if isinstance(n, (int, float)) and str(tag).strip():
                        counts[str(tag).strip()] = counts.get(str(tag).strip(), 0) + int(n)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(t for t, _ in ranked[:limit])


def user_metadata(entry: dict, job: dict | None = None) -> dict:
    meta = entry.get("metadata") or {}
    notes = [f"Trained by lora-scripts ({entry.get('name')})."]
    if job:
        notes.append(f"Job {job.get('id')}: rank {job.get('lora_rank')}, {job.get('total_steps')} steps, base model {job.get('base_model')}.")
    return {
        "description": f"LoRA trained with lora-scripts from {meta.get('ss_sd_model_name') or 'its base model'}",
        "sd version": sd_version(meta),
        "activation text": activation_text(meta),
        "preferred weight": 0,
        "negative text": "",
        "notes": " ".join(notes),
    }


def _sha256(path: str) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def install_lora(client: Client, name: str, lora_dir: str, job: dict | None = None, overwrite: bool = False) -> Installed:
    """Copies the server's LoRA `name` (with preview and card metadata) into `lora_dir`."""
    if not _SAFE_NAME.match(name) or name in (".", "..") or name.startswith("."):
        raise LoraScriptsError(f"refusing LoRA name {name!r}: it is not a plain file name")
    entry = next((e for e in client.loras() if e.get("name") == name or e.get("alias") == name), None)
    if entry is None:
        raise LoraScriptsError(f"the lora-scripts server at {client.base_url} lists no LoRA named {name!r}")
    stem = entry["name"]
    os.makedirs(lora_dir, exist_ok=True)
    dest = os.path.join(lora_dir, f"{stem}.safetensors")
    tmp = os.path.join(lora_dir, f".{stem}.download")
    client.download_lora(stem, tmp)
    try:
        existed = os.path.exists(dest)
        unchanged = existed and _sha256(dest) == _sha256(tmp)
        if existed and not unchanged and not overwrite:
            raise LoraScriptsError(f"{dest} already exists and differs from the server's {stem}; rename one of them or enable overwriting")
        if unchanged:
            os.unlink(tmp)
        else:
            os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    preview_path = None
    preview = client.lora_preview(stem)
    if preview:
        preview_path = os.path.join(lora_dir, f"{stem}.preview.png")
        write_bytes_atomic(preview_path, preview)
    meta_path = os.path.join(lora_dir, f"{stem}.json")
    if not os.path.exists(meta_path) or not unchanged:
        # A1111 edits this file from its UI; only a new LoRA file gets a new card.
        write_bytes_atomic(meta_path, (json.dumps(user_metadata(entry, job), indent=4, ensure_ascii=False) + "\n").encode("utf-8"))
    return Installed(stem, dest, preview_path, meta_path, replaced=existed and not unchanged, unchanged=unchanged)

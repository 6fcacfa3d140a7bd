"""A1111 gallery selections → dataset images with their prompts as starting captions.

A1111's gallery hands an extension its images as file paths (Gradio 3: dicts with "name", or plain paths)
and its generation info as JSON with one prompt per image ("all_prompts"), so the caption of image i is
all_prompts[i - index_of_first_image] (A1111 puts a grid first when it made one).
"""

from __future__ import annotations

import json
import os
import re

from .client import Client, DatasetImage

_LORA_TAG = re.compile(r"<(?:lora|lyco|hypernet):[^>]*>", re.IGNORECASE)


def gallery_path(item: object) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for k in ("name", "path"):
            if isinstance(item.get(k), str):
                return item[k]
        if isinstance(item.get("image"), dict):
            return gallery_path(item["image"])
    if isinstance(item, (list, tuple)) and item:
        return gallery_path(item[0])
    raise ValueError(f"cannot find an image file in the gallery item {item!r}")


def caption_from_prompt(prompt: str) -> str:
    """The prompt without extra-network tags, which are not content, with its whitespace tidied."""
    text = _LORA_TAG.sub("", prompt or "")
    text = re.sub(r"\s*,\s*(,\s*)*", ", ", text)
    return re.sub(r"\s+", " ", text).strip(" ,")


def selection_captions(generation_info: str | dict | None, count: int) -> list[str]:
    try:
        info = json.loads(generation_info) if isinstance(generation_info, str) else (generation_info or {})
    except ValueError:
        info = {}
    prompts = info.get("all_prompts") or ([info["prompt"]] if isinstance(info.get("prompt"), str) else [])
    first = int(info.get("index_of_first_image", 0) or 0)
    out = []
    for i in range(count):
        j = i - first
        p = prompts[j] if 0 <= j < len(prompts) else (prompts[0] if prompts else "")
        out.append(caption_from_prompt(p))
    return out


def send_to_dataset(client: Client, dataset: str, gallery: list, generation_info: str | dict | None, selected: int | None = None) -> dict:
    """Sends the selected image (or the whole gallery when none is selected) with its prompt as caption."""
    if not gallery:
        raise ValueError("the gallery is empty: generate an image first")
    captions = selection_captions(generation_info, len(gallery))
    indices = [selected] if selected is not None and 0 <= selected < len(gallery) else list(range(len(gallery)))
    images = []
    for i in indices:
        path = gallery_path(gallery[i])
        with open(path, "rb") as f:
            data = f.read()
        images.append(DatasetImage(data=data, caption=captions[i] or None))
    if not images:
        raise ValueError("nothing selected")
    result = client.add_images(dataset, images, mode="missing")
    result["sent"] = [os.path.basename(gallery_path(gallery[i])) for i in indices]
    return result

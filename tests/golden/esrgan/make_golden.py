"""Golden outputs for tests/upscale-esrgan.test.ts, computed with PyTorch + Pillow independently of lora-scripts.

A tiny RRDBNet (nf 8, gc 4, 2 blocks) with seeded random weights in BasicSR's key layout, a ×4 model and a
×2 model (pixel-unshuffle 2 in front of the same trunk), run on a 13×11 image the way A1111 1.10 feeds an
ESRGAN upscaler: BGR, [0, 1], clamp, ×255, numpy round. Tiled runs follow A1111's images.split_grid /
combine_grid (Pillow crop and paste with an "L" mask); the `*_upscale_by_*` and `*_by_*` cases follow Upscaler.upscale (target floored
to multiples of 8, Lanczos to land on it).

Run: /tmp/torchenv/bin/python tests/golden/esrgan/make_golden.py   (needs torch, safetensors, pillow, numpy)
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
NF, GC, NB = 8, 4, 2
torch.manual_seed(20261206)


def make_weights(in_ch):
    sd = {}

    def add(name, o, i, gain=1.0):
        sd[name + ".weight"] = torch.randn(o, i, 3, 3) * (gain / math.sqrt(i * 9))
        sd[name + ".bias"] = torch.randn(o) * 0.05

    add("conv_first", NF, in_ch)
    for b in range(NB):
        for k in (1, 2, 3):
            for j in range(1, 6):
                add(f"body.{b}.rdb{k}.conv{j}", NF if j == 5 else GC, NF + (j - 1) * GC)
    add("conv_body", NF, NF)
    add("conv_up1", NF, NF, 1.4)
    add("conv_up2", NF, NF, 1.4)
    add("conv_hr", NF, NF, 1.4)
    add("conv_last", 3, NF, 0.6)
    sd["conv_last.bias"] = torch.full((3,), 0.45)
    return {k: v.float().contiguous() for k, v in sd.items()}


def lrelu(x):
    return F.leaky_relu(x, 0.2)


def net(sd, x, unshuffle):
    conv = lambda t, n: F.conv2d(t, sd[n + ".weight"], sd[n + ".bias"], padding=1)
    if unshuffle > 1:
        x = F.pixel_unshuffle(x, unshuffle)
    fea = conv(x, "conv_first")
    t = fea
    for b in range(NB):
        t0 = t
        for k in (1, 2, 3):
            p = f"body.{b}.rdb{k}"
            r0 = t
            outs = [t]
            for j in range(1, 5):
                outs.append(lrelu(conv(torch.cat(outs, 1), f"{p}.conv{j}")))
            t = conv(torch.cat(outs, 1), f"{p}.conv5") * 0.2 + r0
        t = t * 0.2 + t0
    fea = fea + conv(t, "conv_body")
    fea = lrelu(conv(F.interpolate(fea, scale_factor=2, mode="nearest"), "conv_up1"))
    fea = lrelu(conv(F.interpolate(fea, scale_factor=2, mode="nearest"), "conv_up2"))
    return conv(lrelu(conv(fea, "conv_hr")), "conv_last")


def patch(sd, unshuffle, img):
    a = np.array(img.convert("RGB"))[:, :, ::-1]
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(a, (2, 0, 1))) / 255).unsqueeze(0).float()
    h, w = x.shape[2], x.shape[3]
    ph, pw = (-h) % unshuffle, (-w) % unshuffle
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    with torch.no_grad():
        y = net(sd, x, unshuffle)
    s = 4 // unshuffle
    y = y[0, :, : h * s, : w * s].clamp(0, 1).numpy()
    y = (255.0 * np.moveaxis(y, 0, 2)).round().astype(np.uint8)[:, :, ::-1]
    return Image.fromarray(np.ascontiguousarray(y), "RGB")


def tiled(sd, unshuffle, img, tile, overlap):
    w, h = img.size
    cols = math.ceil((w - overlap) / (tile - overlap))
    rows = math.ceil((h - overlap) / (tile - overlap))
    dx = (w - tile) / (cols - 1) if cols > 1 else 0
    dy = (h - tile) / (rows - 1) if rows > 1 else 0
    grid = []
    for r in range(rows):
        y = int(r * dy)
        if y + tile >= h:
            y = h - tile
        row = []
        for c in range(cols):
            x = int(c * dx)
            if x + tile >= w:
                x = w - tile
            row.append((x, patch(sd, unshuffle, img.crop((x, y, x + tile, y + tile)))))
        grid.append((y, row))
    s = row[0][1].width // tile
    th, W, H, ov = tile * s, w * s, h * s, overlap * s
    ramp = (np.arange(ov, dtype=np.float32) * 255 / ov).astype(np.uint8)
    mask_w = Image.fromarray(np.repeat(ramp.reshape(1, ov), th, axis=0), "L")
    mask_h = Image.fromarray(np.repeat(ramp.reshape(ov, 1), W, axis=1), "L")
    out = Image.new("RGB", (W, H))
    for y, row in grid:
        y *= s
        line = Image.new("RGB", (W, th))
        for x, t in row:
            x *= s
            if x == 0:
                line.paste(t, (0, 0))
                continue
            line.paste(t.crop((0, 0, ov, th)), (x, 0), mask=mask_w)
            line.paste(t.crop((ov, 0, t.width, th)), (x + ov, 0))
        if y == 0:
            out.paste(line, (0, 0))
            continue
        out.paste(line.crop((0, 0, W, ov)), (0, y), mask=mask_h)
        out.paste(line.crop((0, ov, W, th)), (0, y + ov))
    return out


def upscale(sd, unshuffle, img, scale, tile, overlap, resample=None):
    dest_w, dest_h = int((img.width * scale) // 8 * 8), int((img.height * scale) // 8 * 8)
    for _ in range(3):
        if img.width >= dest_w and img.height >= dest_h and scale != 1:
            break
        shape = img.size
        if resample is not None:
            img = img.resize((int(img.width * scale), int(img.height * scale)), resample=resample)
        else:
            img = tiled(sd, unshuffle, img, tile, overlap) if tile > 0 else patch(sd, unshuffle, img)
        if shape == img.size:
            break
    if img.size != (dest_w, dest_h):
        img = img.resize((dest_w, dest_h), resample=Image.LANCZOS)
    return img


def main():
    rng = np.random.default_rng(7)
    # A smooth gradient plus noise: the network's output then varies across the whole range.
    yy, xx = np.mgrid[0:11, 0:13]
    base = np.stack([xx * 18, yy * 22, (xx + yy) * 10], axis=2) + rng.integers(0, 40, (11, 13, 3))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    img.save(os.path.join(HERE, "input.png"))
    sd4 = make_weights(3)
    sd2 = make_weights(12)
    save_file(sd4, os.path.join(HERE, "rrdb-x4.safetensors"))
    save_file(sd2, os.path.join(HERE, "rrdb-x2.safetensors"))
    cases = {
        "x4_whole": patch(sd4, 1, img),
        "x4_tiles_8_2": tiled(sd4, 1, img, 8, 2),
        "x4_tile_16_4": tiled(sd4, 1, img, 16, 4),
        "x2_whole": patch(sd2, 2, img),
        "x4_upscale_by_3": upscale(sd4, 1, img, 3, 0, 0),
        "x2_upscale_by_8": upscale(sd2, 2, img, 8, 0, 0),
        "lanczos_by_2": upscale(None, 1, img, 2, 0, 0, Image.LANCZOS),
        "nearest_by_2.5": upscale(None, 1, img, 2.5, 0, 0, Image.NEAREST),
    }
    manifest = {"input": "input.png", "models": {"x4": "rrdb-x4.safetensors", "x2": "rrdb-x2.safetensors"}, "cases": {}}
    for name, out in cases.items():
        a = np.array(out)
        a.tofile(os.path.join(HERE, name + ".rgb"))
        manifest["cases"][name] = {"file": name + ".rgb", "width": out.width, "height": out.height, "mean": float(a.mean()), "std": float(a.std())}
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

"""Plain-PyTorch peer for the benchmarks: the latent-diffusion UNet (Rombach et al. 2022, `openaimodel.py`) and
SDXL's variant (Podell et al. 2023), written from the architecture, without diffusers (not installable here).
Attention is F.scaled_dot_product_attention, as diffusers computes it on CPU; LoRA comes from peft (rank 16,
alpha 16, kohya's default UNet targets: attention, proj_in/out, feed-forward).

Usage (2 threads, fp32 compute; one JSON line on stdout):
  torch_ldm.py count                      parameters of the SD 1.5 and SDXL UNets (meta device, no memory)
  torch_ldm.py unet  sd15|sdxl SIZE N     one CFG step (batch 2) at SIZE², N timed runs after a warm-up
  torch_ldm.py train sd15|sdxl SIZE N [gc] [bf16]  one LoRA training step at SIZE², batch 1, AdamW; gc = gradient
                                          checkpointing, bf16 = forward under torch.autocast (bfloat16, as kohya's
                                          mixed_precision; LoRA weights and AdamW stay float32)
  torch_ldm.py first-image CKPT SIZE    time to a first image from an SD 1.x single-file checkpoint (.safetensors, any
                                          float dtype): load the UNet, the CLIP text encoder (transformers) and the VAE
                                          decoder into float32 models, encode a prompt, one CFG step, decode
Env: PEER_THREADS (2), PEER_MAX_GIB (a cap on RSS: the run stops with an error line when it passes it)."""
import json, math, os, resource, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

SHAPES = {
    # v1-inference.yaml: 8 heads everywhere, 1x1 conv projections, CLIP ViT-L context.
    'sd15': dict(ch=320, mult=(1, 2, 4, 4), res=2, depth=(1, 1, 1, 0), mid_depth=1, ctx=768, heads=8, head_dim=None, linear=False, adm=None),
    # sd_xl_base.yaml: no attention at the first level, transformer depth 2 and 10, 64-wide heads, Linear projections,
    # context 768 + 1280, label_emb over pooled (1280) + 6 Fourier size features of 256.
    'sdxl': dict(ch=320, mult=(1, 2, 4), res=2, depth=(0, 2, 10), mid_depth=10, ctx=2048, heads=None, head_dim=64, linear=True, adm=2816),
}


def timestep_features(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    a = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(a), torch.sin(a)], -1)


def gn(c, eps=1e-5):
    return nn.GroupNorm(32, c, eps=eps)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb):
        super().__init__()
        self.in_layers = nn.Sequential(gn(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, cout))
        self.out_layers = nn.Sequential(gn(cout), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Attention(nn.Module):
    def __init__(self, dim, ctx, heads):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(ctx, dim, bias=False)
        self.to_v = nn.Linear(ctx, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x, c):
        B, N, D = x.shape
        split = lambda t: t.view(B, -1, self.heads, D // self.heads).transpose(1, 2)
        o = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(c)), split(self.to_v(c)))
        return self.to_out(o.transpose(1, 2).reshape(B, N, D))


class GEGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class TransformerBlock(nn.Module):
    def __init__(self, dim, ctx, heads):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn1 = Attention(dim, dim, heads)
        self.attn2 = Attention(dim, ctx, heads)
        self.ff = nn.Module()
        self.ff.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim))

    def forward(self, x, c):
        n = self.norm1(x)
        x = x + self.attn1(n, n)
        x = x + self.attn2(self.norm2(x), c)
        return x + self.ff.net(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, ch, ctx, depth, heads, linear):
        super().__init__()
        self.linear = linear
        self.norm = gn(ch, 1e-6)
        self.proj_in = nn.Linear(ch, ch) if linear else nn.Conv2d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(ch, ctx, heads) for _ in range(depth)])
        self.proj_out = nn.Linear(ch, ch) if linear else nn.Conv2d(ch, ch, 1)

    def forward(self, x, c):
        B, C, H, W = x.shape
        h = self.norm(x)
        tokens = lambda t: t.flatten(2).transpose(1, 2)
        image = lambda t: t.transpose(1, 2).reshape(B, C, H, W)
        h = self.proj_in(tokens(h)) if self.linear else tokens(self.proj_in(h))
        for blk in self.transformer_blocks:
            h = blk(h, c)
        return x + (image(self.proj_out(h)) if self.linear else self.proj_out(image(h)))


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class Step(nn.Sequential):
    """One input/output block: layers that take (x, emb, context) as they need; checkpointed as a unit when asked."""
    checkpointing = False

    def forward(self, x, emb, c):
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(self._run, x, emb, c, use_reentrant=False)
        return self._run(x, emb, c)

    def _run(self, x, emb, c):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x, c) if isinstance(layer, SpatialTransformer) else layer(x)
        return x


class UNet(nn.Module):
    def __init__(self, s):
        super().__init__()
        ch, emb = s['ch'], 4 * s['ch']
        heads = lambda c: s['heads'] or c // s['head_dim']
        attn = lambda c, d: SpatialTransformer(c, s['ctx'], d, heads(c), s['linear'])
        self.model_channels = ch
        self.time_embed = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(s['adm'], emb), nn.SiLU(), nn.Linear(emb, emb))) if s['adm'] else None
        self.input_blocks = nn.ModuleList([Step(nn.Conv2d(4, ch, 3, padding=1))])
        skips, c = [ch], ch
        for level, m in enumerate(s['mult']):
            for _ in range(s['res']):
                layers = [ResBlock(c, ch * m, emb)]
                c = ch * m
                if s['depth'][level]:
                    layers.append(attn(c, s['depth'][level]))
                self.input_blocks.append(Step(*layers))
                skips.append(c)
            if level < len(s['mult']) - 1:
                self.input_blocks.append(Step(Downsample(c)))
                skips.append(c)
        self.middle_block = Step(ResBlock(c, c, emb), attn(c, s['mid_depth']), ResBlock(c, c, emb))
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(s['mult']))):
            m = s['mult'][level]
            for r in range(s['res'] + 1):
                layers = [ResBlock(c + skips.pop(), ch * m, emb)]
                c = ch * m
                if s['depth'][level]:
                    layers.append(attn(c, s['depth'][level]))
                if level > 0 and r == s['res']:
                    layers.append(Upsample(c))
                self.output_blocks.append(Step(*layers))
        self.out = nn.Sequential(gn(c), nn.SiLU(), nn.Conv2d(c, 4, 3, padding=1))

    def set_checkpointing(self, on):
        for m in self.modules():
            if isinstance(m, Step):
                m.checkpointing = on

    def forward(self, x, t, c, y=None):
        emb = self.time_embed(timestep_features(t, self.model_channels))
        if self.label_emb is not None:
            emb = emb + self.label_emb(y)
        h, hs = x, []
        for b in self.input_blocks:
            h = b(h, emb, c)
            hs.append(h)
        h = self.middle_block(h, emb, c)
        for b in self.output_blocks:
            h = b(torch.cat([h, hs.pop()], 1), emb, c)
        return self.out(h)



class VaeResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = gn(cin, 1e-6), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = gn(cout, 1e-6), nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        return self.nin_shortcut(x) + self.conv2(F.silu(self.norm2(h)))


class VaeAttention(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.norm = gn(ch, 1e-6)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(ch, ch, 1) for _ in range(4))

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        tokens = lambda t: t.flatten(2).transpose(1, 2)[:, None]
        o = F.scaled_dot_product_attention(tokens(self.q(h)), tokens(self.k(h)), tokens(self.v(h)))
        return x + self.proj_out(o[:, 0].transpose(1, 2).reshape(B, C, H, W))


class VaeDecoder(nn.Module):
    """The KL autoencoder's decoder (LDM `first_stage_model.decoder` names) with `post_quant_conv`."""
    def __init__(self, ch=128, mult=(1, 2, 4, 4), res=2, z=4):
        super().__init__()
        chs = [ch * m for m in mult]
        c = chs[-1]
        self.post_quant_conv = nn.Conv2d(z, z, 1)
        self.decoder = nn.Module()
        d = self.decoder
        d.conv_in = nn.Conv2d(z, c, 3, padding=1)
        d.mid = nn.Module()
        d.mid.block_1, d.mid.attn_1, d.mid.block_2 = VaeResBlock(c, c), VaeAttention(c), VaeResBlock(c, c)
        d.up = nn.ModuleList([nn.Module() for _ in chs])
        for level in reversed(range(len(chs))):
            u = d.up[level]
            u.block = nn.ModuleList()
            for _ in range(res + 1):
                u.block.append(VaeResBlock(c, chs[level]))
                c = chs[level]
            if level > 0:
                u.upsample = Upsample(c)
        d.norm_out, d.conv_out = gn(c, 1e-6), nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z):
        d = self.decoder
        h = d.conv_in(self.post_quant_conv(z))
        h = d.mid.block_2(d.mid.attn_1(d.mid.block_1(h)))
        for level in reversed(range(len(d.up))):
            for b in d.up[level].block:
                h = b(h)
            if level > 0:
                h = d.up[level].upsample(h)
        return d.conv_out(F.silu(d.norm_out(h)))


def first_image(path, size):
    """What a PyTorch user's first image costs from a checkpoint file: models built on the meta device and given the
    file's tensors (widened to float32), then prompt encoding, one CFG step (batch 2) and a VAE decode."""
    from safetensors import safe_open
    from transformers import CLIPTextConfig, CLIPTextModel
    t0 = time.perf_counter()
    parts = {'model.diffusion_model.': {}, 'cond_stage_model.transformer.': {}, 'first_stage_model.': {}}
    with safe_open(path, framework='pt') as f:
        for k in f.keys():
            for p, d in parts.items():
                if k.startswith(p) and not k.startswith('first_stage_model.encoder.') and not k.startswith('first_stage_model.quant_conv.'):
                    d[k[len(p):]] = f.get_tensor(k).float()
    with torch.device('meta'):
        unet = UNet(SHAPES['sd15'])
        te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                          num_attention_heads=12, max_position_embeddings=77, hidden_act='quick_gelu'))
        vae = VaeDecoder()
    unet.load_state_dict(parts['model.diffusion_model.'], assign=True)
    vae.load_state_dict(parts['first_stage_model.'], assign=True)
    # transformers 5 dropped the `text_model.` level of CLIPTextModel; SD checkpoints keep it.
    tower = te.text_model if hasattr(te, 'text_model') else te
    prefix = 'text_model.' if tower is te else ''
    te_sd = {k[len(prefix):] if prefix and k.startswith(prefix) else k: v for k, v in parts['cond_stage_model.transformer.'].items()}
    missing = [k for k in te.load_state_dict(te_sd, strict=False, assign=True).missing_keys if not k.endswith('position_ids')]
    if missing:
        raise SystemExit(f'text encoder weights missing from the checkpoint: {missing[:5]}')
    tower.embeddings.position_ids = torch.arange(77)[None]
    parts.clear()
    for m in (unet, te, vae):
        m.eval()
    load = time.perf_counter() - t0
    h = size // 8
    with torch.inference_mode():
        a = time.perf_counter()
        ctx = te(torch.randint(0, 49407, (2, 77)))[0]
        encode = time.perf_counter() - a
        a = time.perf_counter()
        x = unet(torch.randn(2, 4, h, h), torch.full((2,), 999), ctx)
        step = time.perf_counter() - a
        a = time.perf_counter()
        image = vae(x[:1] / 0.18215)
        decode = time.perf_counter() - a
    return {'peer': 'pytorch-ldm', 'first_image': size, 'load_seconds': load, 'text_encode_seconds': encode, 'cfg_step_seconds': step,
            'vae_decode_seconds': decode, 'seconds': time.perf_counter() - t0, 'image_finite': bool(torch.isfinite(image).all()), 'peak_rss_gib': rss()}


def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def inputs(s, batch, size):
    h = size // 8
    x = torch.randn(batch, 4, h, h)
    c = torch.randn(batch, 77, s['ctx'])
    y = torch.randn(batch, s['adm']) if s['adm'] else None
    return x, torch.full((batch,), 500), c, y


def watch_memory():
    """Stops the process when its RSS passes PEER_MAX_GIB: reported as not fitting instead of endangering the machine."""
    cap = float(os.environ.get('PEER_MAX_GIB', 0))
    if not cap:
        return
    import threading

    def loop():
        while True:
            with open('/proc/self/statm') as f:
                gib = int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**30
            if gib > cap:
                print(json.dumps({'peer': 'pytorch-ldm', 'error': f'RSS {gib:.1f} GiB passed the {cap} GiB cap; stopped'}), flush=True)
                os._exit(3)
            time.sleep(0.2)
    threading.Thread(target=loop, daemon=True).start()


def main():
    watch_memory()
    torch.set_num_threads(int(os.environ.get('PEER_THREADS', 2)))
    torch.manual_seed(0)
    mode = sys.argv[1]
    if mode == 'count':
        with torch.device('meta'):
            print(json.dumps({'peer': 'pytorch-ldm', 'unet_params': {k: sum(p.numel() for p in UNet(s).parameters()) for k, s in SHAPES.items()}}))
        return
    if mode == 'first-image':
        print(json.dumps(first_image(sys.argv[2], int(sys.argv[3]))))
        return
    shape, size, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    s = SHAPES[shape]
    t0 = time.perf_counter()
    unet = UNet(s).float()
    build = time.perf_counter() - t0
    params = sum(p.numel() for p in unet.parameters())
    if mode == 'unet':
        unet.eval()
        x, t, c, y = inputs(s, 2, size)
        ts = []
        with torch.inference_mode():
            for _ in range(n + 1):
                a = time.perf_counter(); unet(x, t, c, y); ts.append(time.perf_counter() - a)
        print(json.dumps({'peer': 'pytorch-ldm', 'shape': shape, 'unet_cfg_step': size, 'unet_params': params, 'build_seconds': build,
                          'warmup_seconds': ts[0], 'seconds': ts[1:], 'min': min(ts[1:]), 'peak_rss_gib': rss()}))
        return
    from peft import LoraConfig, inject_adapter_in_model
    unet.requires_grad_(False)
    unet = inject_adapter_in_model(LoraConfig(r=16, lora_alpha=16, init_lora_weights='gaussian',
                                              target_modules=['to_q', 'to_k', 'to_v', 'to_out.0', 'proj_in', 'proj_out', 'ff.net.0.proj', 'ff.net.2']), unet)
    flags = sys.argv[5:]
    gc, bf16 = 'gc' in flags, 'bf16' in flags
    unet.set_checkpointing(gc)
    unet.train()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    x, t, c, y = inputs(s, 1, size)
    ts = []
    for i in range(n + 1):
        a = time.perf_counter()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            pred = unet(x, t, c, y)
        loss = F.mse_loss(pred.float(), torch.randn_like(x))
        loss.backward(); opt.step(); opt.zero_grad()
        ts.append(time.perf_counter() - a)
    print(json.dumps({'peer': 'pytorch-ldm-peft', 'shape': shape, 'train_step': size, 'gc': gc, 'autocast': 'bfloat16' if bf16 else None, 'unet_params': params,
                      'lora_params': sum(p.numel() for p in trainable), 'warmup_seconds': ts[0], 'seconds': ts[1:], 'min': min(ts[1:]),
                      'loss': loss.item(), 'peak_rss_gib': rss()}))


if __name__ == '__main__':
    main()

"""An independent PyTorch implementation of msd's three multistage U-Net families.

Written from the authors' network descriptions (score-SDE NCSN++ with BigGAN ResBlocks and FIR resampling,
EDM's SongUNet/DDPM++, the openai/LDM U-Net), with msd's block order and msd's tensor names, so that a
safetensors file of msd loads here and the other way round. It is the peer of msd's candle networks in two
ways: the fixtures under tests/fixtures/ (outputs of this code for given weights and inputs) and the speed
comparison of scripts/bench-peer.sh.

Deliberately independent formulations where msd takes a shortcut: FIR resampling is upfirdn2d (zero
insertion, padding, correlation with the flipped 4x4 kernel) rather than a transposed convolution; LDM
upsampling is F.interpolate(nearest); EDM's box filter is a depthwise stride-2 convolution with the [1,1]
kernel; attention is written with einsum as in the authors' code.

A model is built from msd's config (the TOML of `msd model-info --print-config`, parsed to a dict).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def stage_of(boundaries, t):
    """The number of boundaries strictly below t (msd's routing rule)."""
    return sum(1 for b in boundaries if b < t)


class NIN(nn.Module):
    """score-SDE NIN: per-pixel linear layer, W [in, out], b [out]."""

    def __init__(self, cin, cout):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(cin, cout))
        self.b = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        y = torch.einsum("bchw,cd->bdhw", x, self.W)
        return y + self.b[None, :, None, None]


def group_norm(c, groups, eps):
    return nn.GroupNorm(groups, c, eps=eps)


def min_quarter(c, max_groups):
    return max(1, min(c // 4, max_groups))


# ---------------------------------------------------------------------------------------------------------
# NCSN++ (score-SDE, DPM-Solver setup)
# ---------------------------------------------------------------------------------------------------------

FIR = [1.0, 3.0, 3.0, 1.0]


def fir_kernel(x, gain):
    k = torch.tensor(FIR, dtype=x.dtype, device=x.device)
    k = torch.outer(k, k)
    return k / k.sum() * gain


def upfirdn2d(x, k, up, down, pad0, pad1):
    """upfirdn2d_native of score-SDE: zero-insert by `up`, pad, correlate with the flipped kernel, keep every
    `down`-th sample. Each channel separately."""
    b, c, h, w = x.shape
    x = x.reshape(b * c, 1, h, w)
    if up > 1:
        z = x.new_zeros(b * c, 1, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, (pad0, pad1, pad0, pad1))
    y = F.conv2d(x, torch.flip(k, [0, 1])[None, None], stride=down)
    return y.reshape(b, c, y.shape[-2], y.shape[-1])


# How the FIR resampling is computed: "upfirdn" (the authors' upfirdn2d_native, used for the fixtures) or
# "depthwise" (one grouped (transposed) convolution, ~10x faster in PyTorch on the CPU; used for timing).
# make_fixtures.py checks that both give the same output.
FIR_IMPL = "depthwise"


def fir_up(x):
    if FIR_IMPL == "upfirdn":
        # upsample_2d(x, k, factor=2): gain factor^2, p = 4 - 2, pad ((p+1)//2 + 1, p//2) = (2, 1).
        return upfirdn2d(x, fir_kernel(x, 4.0), 2, 1, 2, 1)
    c = x.shape[1]
    return F.conv_transpose2d(x, fir_kernel(x, 4.0)[None, None].expand(c, 1, 4, 4), stride=2, padding=1, groups=c)


def fir_down(x):
    if FIR_IMPL == "upfirdn":
        # downsample_2d(x, k, factor=2): p = 2, pad (1, 1), down 2.
        return upfirdn2d(x, fir_kernel(x, 1.0), 1, 2, 1, 1)
    c = x.shape[1]
    return F.conv2d(x, fir_kernel(x, 1.0)[None, None].expand(c, 1, 4, 4), stride=2, padding=1, groups=c)


def fir_blur_pad2(x):
    if FIR_IMPL == "upfirdn":
        return upfirdn2d(x, fir_kernel(x, 1.0), 1, 1, 2, 2)
    c = x.shape[1]
    return F.conv2d(x, fir_kernel(x, 1.0)[None, None].expand(c, 1, 4, 4), padding=2, groups=c)


class NcsnResBlock(nn.Module):
    """ResnetBlockBigGANpp with FIR resampling and skip_rescale."""

    def __init__(self, cin, cout, temb_dim, up, down, dropout, max_groups):
        super().__init__()
        self.norm0 = group_norm(cin, min_quarter(cin, max_groups), 1e-6)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.dense = nn.Linear(temb_dim, cout)
        self.norm1 = group_norm(cout, min_quarter(cout, max_groups), 1e-6)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if (cin != cout or up or down) else None
        self.up, self.down, self.p = up, down, dropout

    def forward(self, x, emb):
        h = F.silu(self.norm0(x))
        if self.up:
            h, x = fir_up(h), fir_up(x)
        elif self.down:
            h, x = fir_down(h), fir_down(x)
        h = self.conv0(h)
        h = h + self.dense(emb)[:, :, None, None]
        h = F.silu(self.norm1(h))
        h = F.dropout(h, self.p, self.training)
        h = self.conv1(h)
        if self.skip is not None:
            x = self.skip(x)
        return (x + h) / math.sqrt(2.0)


class NcsnAttn(nn.Module):
    """AttnBlockpp: GroupNorm, NIN q/k/v, single-head softmax over H*W with scale C^-1/2, NIN out, /sqrt2."""

    def __init__(self, c, max_groups):
        super().__init__()
        self.norm = group_norm(c, min_quarter(c, max_groups), 1e-6)
        self.nin_q, self.nin_k, self.nin_v, self.nin_out = NIN(c, c), NIN(c, c), NIN(c, c), NIN(c, c)

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q, k, v = self.nin_q(h), self.nin_k(h), self.nin_v(h)
        w = torch.einsum("bchw,bcij->bhwij", q, k) * (int(c) ** (-0.5))
        w = torch.softmax(w.reshape(b, hh, ww, hh * ww), dim=-1).reshape(b, hh, ww, hh, ww)
        h = torch.einsum("bhwij,bcij->bchw", w, v)
        return (x + self.nin_out(h)) / math.sqrt(2.0)


class PyramidConv(nn.Module):
    """up_or_down_sampling.Conv2d(down=True): FIR blur with pad (2, 2), then 3x3 stride-2 conv, no pad."""

    def __init__(self, cin, cout):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        x = fir_blur_pad2(x)
        return F.conv2d(x, self.weight, stride=2) + self.bias[None, :, None, None]


def sinusoid(x, dim, denom, cos_first):
    half = dim // 2
    freqs = torch.exp(-torch.arange(half, dtype=torch.float64) * math.log(10000.0) / denom)
    a = x.to(torch.float64)[:, None] * freqs[None]
    parts = [torch.cos(a), torch.sin(a)] if cos_first else [torch.sin(a), torch.cos(a)]
    return torch.cat(parts, dim=1)


class NcsnEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        nf, g, p = cfg["en_width"], cfg["max_groups"], cfg["dropout"]
        td = 4 * nf
        self.cfg = cfg
        self.temb0 = nn.Linear(nf, td)
        self.temb1 = nn.Linear(td, td)
        self.conv_in = nn.Conv2d(cfg["in_channels"], nf, 3, padding=1)
        self.skip_ch = [nf]
        ch, pyr = nf, cfg["in_channels"]
        nl = len(cfg["ch_mult"])
        for l, mult in enumerate(cfg["ch_mult"]):
            lvl = nn.Module()
            res = cfg["resolution"] >> l
            for i in range(cfg["num_res_blocks"]):
                setattr(lvl, f"block{i}", NcsnResBlock(ch, nf * mult, td, False, False, p, g))
                ch = nf * mult
                if res in cfg["attn_resolutions"]:
                    setattr(lvl, f"attn{i}", NcsnAttn(ch, g))
                self.skip_ch.append(ch)
            setattr(self, f"level{l}", lvl)
            if l + 1 != nl:
                setattr(self, f"down{l}", NcsnResBlock(ch, ch, td, False, True, p, g))
                setattr(self, f"pyramid{l}", PyramidConv(pyr, ch))
                pyr = ch
                self.skip_ch.append(ch)
        self.mid = nn.Module()
        self.mid.block0 = NcsnResBlock(ch, ch, td, False, False, p, g)
        self.mid.attn = NcsnAttn(ch, g)
        self.mid.block1 = NcsnResBlock(ch, ch, td, False, False, p, g)
        self.out_ch = ch

    def forward(self, x, t):
        cfg, nf = self.cfg, self.cfg["en_width"]
        e = sinusoid(999.0 * t, nf, nf // 2 - 1, False).to(x.dtype)
        emb = F.silu(self.temb1(F.silu(self.temb0(e))))
        hs = [self.conv_in(x)]
        pyramid = x
        nl = len(cfg["ch_mult"])
        for l in range(nl):
            lvl = getattr(self, f"level{l}")
            for i in range(cfg["num_res_blocks"]):
                h = getattr(lvl, f"block{i}")(hs[-1], emb)
                if hasattr(lvl, f"attn{i}"):
                    h = getattr(lvl, f"attn{i}")(h)
                hs.append(h)
            if l + 1 != nl:
                h = getattr(self, f"down{l}")(hs[-1], emb)
                pyramid = (getattr(self, f"pyramid{l}")(pyramid) + h) / math.sqrt(2.0)
                hs.append(pyramid)
        h = self.mid.block1(self.mid.attn(self.mid.block0(hs[-1], emb)), emb)
        return h, hs, emb


class NcsnDecoder(nn.Module):
    def __init__(self, cfg, d, skip_ch, h_ch):
        super().__init__()
        g, p, td = cfg["max_groups"], cfg["dropout"], 4 * cfg["en_width"]
        self.cfg = cfg
        skips = list(skip_ch)
        ch = h_ch
        for l in reversed(range(len(cfg["ch_mult"]))):
            lvl = nn.Module()
            for i in range(cfg["num_res_blocks"] + 1):
                out = d * cfg["ch_mult"][l]
                setattr(lvl, f"block{i}", NcsnResBlock(ch + skips.pop(), out, td, False, False, p, g))
                ch = out
            if (cfg["resolution"] >> l) in cfg["attn_resolutions"]:
                lvl.attn = NcsnAttn(ch, g)
            setattr(self, f"level{l}", lvl)
            if l != 0:
                setattr(self, f"up{l}", NcsnResBlock(ch, ch, td, True, False, p, g))
        assert not skips
        self.head_norm = group_norm(ch, min_quarter(ch, g), 1e-6)
        self.head_conv = nn.Conv2d(ch, cfg["in_channels"], 3, padding=1)

    def forward(self, h, hs, emb):
        hs = list(hs)
        cfg = self.cfg
        for l in reversed(range(len(cfg["ch_mult"]))):
            lvl = getattr(self, f"level{l}")
            for i in range(cfg["num_res_blocks"] + 1):
                h = getattr(lvl, f"block{i}")(torch.cat([h, hs.pop()], dim=1), emb)
            if hasattr(lvl, "attn"):
                h = lvl.attn(h)
            if l != 0:
                h = getattr(self, f"up{l}")(h, emb)
        return self.head_conv(F.silu(self.head_norm(h)))


# ---------------------------------------------------------------------------------------------------------
# DDPM++ (EDM SongUNet)
# ---------------------------------------------------------------------------------------------------------


def box_down(x):
    c = x.shape[1]
    f = torch.full((c, 1, 2, 2), 0.25, dtype=x.dtype, device=x.device)
    return F.conv2d(x, f, stride=2, groups=c)


def box_up(x):
    # EDM: conv_transpose2d with the [1,1] filter times 4, stride 2, groups = C (nearest-neighbour x2).
    c = x.shape[1]
    f = torch.ones((c, 1, 2, 2), dtype=x.dtype, device=x.device)
    return F.conv_transpose2d(x, f, stride=2, groups=c)


class EdmBlock(nn.Module):
    """EDM UNetBlock (adaptive_scale False, resample_proj True, one head, skip_scale sqrt(1/2))."""

    def __init__(self, cfg, cin, cout, resample, attention):
        super().__init__()
        g, ed = cfg["max_groups"], 4 * cfg["en_width"]
        self.norm0 = group_norm(cin, min_quarter(cin, g), 1e-6)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(ed, cout)
        self.norm1 = group_norm(cout, min_quarter(cout, g), 1e-6)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if (cin != cout or resample) else None
        if attention:
            self.norm2 = group_norm(cout, min_quarter(cout, g), 1e-6)
            self.qkv = nn.Conv2d(cout, 3 * cout, 1)
            self.proj = nn.Conv2d(cout, cout, 1)
        self.attention, self.resample, self.p = attention, resample, cfg["dropout"]

    def rs(self, x):
        if self.resample == "up":
            return box_up(x)
        if self.resample == "down":
            return box_down(x)
        return x

    def forward(self, x, emb):
        orig = x
        x = self.conv0(self.rs(F.silu(self.norm0(x))))
        x = F.silu(self.norm1(x + self.affine(emb)[:, :, None, None]))
        x = self.conv1(F.dropout(x, self.p, self.training))
        x = x + (self.skip(self.rs(orig)) if self.skip is not None else orig)
        x = x * math.sqrt(0.5)
        if self.attention:
            b, c = x.shape[:2]
            q, k, v = self.qkv(self.norm2(x)).reshape(b, c, 3, -1).unbind(2)
            w = torch.einsum("ncq,nck->nqk", q, k / math.sqrt(c)).softmax(dim=2)
            a = torch.einsum("nqk,nck->ncq", w, v)
            x = (self.proj(a.reshape(*x.shape)) + x) * math.sqrt(0.5)
        return x


class EdmEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        nd, ed = cfg["en_width"], 4 * cfg["en_width"]
        if cfg["augment_dim"] > 0:
            self.map_augment = nn.Linear(cfg["augment_dim"], nd, bias=False)
        self.map_layer0 = nn.Linear(nd, ed)
        self.map_layer1 = nn.Linear(ed, ed)
        cout = cfg["en_width"]
        self.conv_in = nn.Conv2d(cfg["in_channels"], cout, 3, padding=1)
        self.skip_ch = [cout]
        for l, mult in enumerate(cfg["channel_mult"]):
            lvl = nn.Module()
            if l > 0:
                lvl.down = EdmBlock(cfg, cout, cout, "down", False)
                self.skip_ch.append(cout)
            for i in range(cfg["num_blocks"]):
                cin, cout = cout, cfg["en_width"] * mult
                attn = (cfg["resolution"] >> l) in cfg["attn_resolutions"]
                setattr(lvl, f"block{i}", EdmBlock(cfg, cin, cout, None, attn))
                self.skip_ch.append(cout)
            setattr(self, f"level{l}", lvl)
        self.out_ch = cout

    def forward(self, x, sigma):
        nd = self.cfg["en_width"]
        e = sinusoid(torch.log(sigma.to(torch.float64)) / 4.0, nd, nd // 2 - 1, False).to(x.dtype)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(e))))
        h = self.conv_in(x)
        hs = [h]
        for l in range(len(self.cfg["channel_mult"])):
            lvl = getattr(self, f"level{l}")
            if l > 0:
                h = lvl.down(h, emb)
                hs.append(h)
            for i in range(self.cfg["num_blocks"]):
                h = getattr(lvl, f"block{i}")(h, emb)
                hs.append(h)
        return h, hs, emb


class EdmDecoder(nn.Module):
    def __init__(self, cfg, d, skip_ch, h_ch):
        super().__init__()
        self.cfg = cfg
        skips = list(skip_ch)
        cout = h_ch
        nl = len(cfg["channel_mult"])
        self.in0 = EdmBlock(cfg, cout, cout, None, True)
        self.in1 = EdmBlock(cfg, cout, cout, None, False)
        for l in reversed(range(nl)):
            lvl = nn.Module()
            if l != nl - 1:
                lvl.up = EdmBlock(cfg, cout, cout, "up", False)
            for i in range(cfg["num_blocks"] + 1):
                cin = cout + skips.pop()
                cout = d * cfg["channel_mult"][l]
                attn = i == cfg["num_blocks"] and (cfg["resolution"] >> l) in cfg["attn_resolutions"]
                setattr(lvl, f"block{i}", EdmBlock(cfg, cin, cout, None, attn))
            setattr(self, f"level{l}", lvl)
        assert not skips
        self.aux_norm = group_norm(cout, min_quarter(cout, cfg["max_groups"]), 1e-6)
        self.aux_conv = nn.Conv2d(cout, cfg["in_channels"], 3, padding=1)

    def forward(self, h, hs, emb):
        hs = list(hs)
        h = self.in1(self.in0(h, emb), emb)
        nl = len(self.cfg["channel_mult"])
        for l in reversed(range(nl)):
            lvl = getattr(self, f"level{l}")
            if l != nl - 1:
                h = lvl.up(h, emb)
            for i in range(self.cfg["num_blocks"] + 1):
                h = getattr(lvl, f"block{i}")(torch.cat([h, hs.pop()], dim=1), emb)
        return self.aux_conv(F.silu(self.aux_norm(h)))


# ---------------------------------------------------------------------------------------------------------
# LDM (openai U-Net)
# ---------------------------------------------------------------------------------------------------------


class LdmResBlock(nn.Module):
    def __init__(self, cfg, cin, cout):
        super().__init__()
        ed, g = 4 * cfg["en_width"], cfg["groups"]
        self.in_norm = group_norm(cin, g, 1e-5)
        self.in_conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(ed, cout)
        self.out_norm = group_norm(cout, g, 1e-5)
        self.out_conv = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.p = cfg["dropout"]

    def forward(self, x, emb):
        h = self.in_conv(F.silu(self.in_norm(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.out_conv(F.dropout(F.silu(self.out_norm(h)), self.p, self.training))
        return (self.skip(x) if self.skip is not None else x) + h


class LdmAttn(nn.Module):
    """AttentionBlock with QKVAttentionLegacy; the Conv1d qkv/proj stored as [out, in, 1, 1]."""

    def __init__(self, cfg, c):
        super().__init__()
        self.norm = group_norm(c, cfg["groups"], 1e-5)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        self.heads = c // cfg["num_head_channels"]

    def forward(self, x):
        b, c, hh, ww = x.shape
        t = hh * ww
        qkv = self.qkv(self.norm(x)).reshape(b, 3 * c, t)
        ch = c // self.heads
        q, k, v = qkv.reshape(b * self.heads, 3 * ch, t).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        w = torch.einsum("bct,bcs->bts", q * scale, k * scale).softmax(dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, hh, ww)
        return x + self.proj(a)


class LdmUp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c, c, 3, 3))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return F.conv2d(x, self.weight, self.bias, padding=1)


class LdmEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        mc, ed = cfg["en_width"], 4 * cfg["en_width"]
        self.time_embed0 = nn.Linear(mc, ed)
        self.time_embed1 = nn.Linear(ed, ed)
        self.conv_in = nn.Conv2d(cfg["in_channels"], mc, 3, padding=1)
        self.skip_ch = [mc]
        self.seq = []  # (kind, name) in forward order; a skip after each entry of `self.seq`
        ch, ds = mc, 1
        nl = len(cfg["channel_mult"])
        for l, mult in enumerate(cfg["channel_mult"]):
            lvl = nn.Module()
            for i in range(cfg["num_res_blocks"]):
                setattr(lvl, f"block{i}", LdmResBlock(cfg, ch, mult * mc))
                ch = mult * mc
                names = [f"level{l}.block{i}"]
                if ds in cfg["attention_ds"]:
                    setattr(lvl, f"attn{i}", LdmAttn(cfg, ch))
                    names.append(f"level{l}.attn{i}")
                self.seq.append(names)
                self.skip_ch.append(ch)
            setattr(self, f"level{l}", lvl)
            if l + 1 != nl:
                setattr(self, f"down{l}", nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                self.seq.append([f"down{l}"])
                self.skip_ch.append(ch)
                ds *= 2
        self.mid = nn.Module()
        self.mid.block0 = LdmResBlock(cfg, ch, ch)
        self.mid.attn = LdmAttn(cfg, ch)
        self.mid.block1 = LdmResBlock(cfg, ch, ch)
        self.out_ch, self.bottom_ds = ch, ds

    def forward(self, x, t):
        mc = self.cfg["en_width"]
        e = sinusoid(t, mc, mc // 2, True).to(x.dtype)
        emb = F.silu(self.time_embed1(F.silu(self.time_embed0(e))))
        h = self.conv_in(x)
        hs = [h]
        for names in self.seq:
            for n in names:
                h = run_layer(self.get_submodule(n), h, emb)
            hs.append(h)
        h = self.mid.block1(self.mid.attn(self.mid.block0(h, emb)), emb)
        return h, hs, emb


def run_layer(m, h, emb):
    if isinstance(m, LdmResBlock):
        return m(h, emb)
    return m(h)


class LdmDecoder(nn.Module):
    def __init__(self, cfg, d, skip_ch, h_ch, ds):
        super().__init__()
        self.cfg = cfg
        skips = list(skip_ch)
        ch = h_ch
        self.seq = []
        for l in reversed(range(len(cfg["channel_mult"]))):
            lvl = nn.Module()
            mult = cfg["channel_mult"][l]
            for i in range(cfg["num_res_blocks"] + 1):
                setattr(lvl, f"block{i}", LdmResBlock(cfg, ch + skips.pop(), d * mult))
                ch = d * mult
                names = [f"level{l}.block{i}"]
                if ds in cfg["attention_ds"]:
                    setattr(lvl, f"attn{i}", LdmAttn(cfg, ch))
                    names.append(f"level{l}.attn{i}")
                if l > 0 and i == cfg["num_res_blocks"]:
                    setattr(self, f"up{l}", LdmUp(ch))
                    names.append(f"up{l}")
                    ds //= 2
                self.seq.append(names)
            setattr(self, f"level{l}", lvl)
        assert not skips
        self.ds_end = ds
        self.out_norm = group_norm(ch, cfg["groups"], 1e-5)
        self.out_conv = nn.Conv2d(ch, cfg["in_channels"], 3, padding=1)

    def forward(self, h, hs, emb):
        hs = list(hs)
        for names in self.seq:
            h = torch.cat([h, hs.pop()], dim=1)
            for n in names:
                h = run_layer(self.get_submodule(n), h, emb)
        return self.out_conv(F.silu(self.out_norm(h)))


# ---------------------------------------------------------------------------------------------------------
# The multistage model
# ---------------------------------------------------------------------------------------------------------


class MultistageUNet(nn.Module):
    """Shared (`encoder`) or separate (`encoders.{k}`) encoders and one decoder per stage (`decoders.{k}`)."""

    def __init__(self, config):
        super().__init__()
        fam = dict(config["family"])
        kind = fam.pop("kind")
        self.kind, self.fam = kind, fam
        self.boundaries = list(config["boundaries"])
        n = len(fam["de_widths"])
        self.shared = config["sharing"] == "shared"
        enc_cls = {"ncsnpp": NcsnEncoder, "ddpmpp": EdmEncoder, "ldm": LdmEncoder}[kind]
        if self.shared:
            self.encoder = enc_cls(fam)
            encs = [self.encoder] * n
        else:
            self.encoders = nn.ModuleList([enc_cls(fam) for _ in range(n)])
            encs = list(self.encoders)
        decs = []
        ds = None
        for k, d in enumerate(fam["de_widths"]):
            e = encs[k]
            if kind == "ncsnpp":
                decs.append(NcsnDecoder(fam, d, e.skip_ch, e.out_ch))
            elif kind == "ddpmpp":
                decs.append(EdmDecoder(fam, d, e.skip_ch, e.out_ch))
            else:
                start = ds if ds is not None else e.bottom_ds
                dec = LdmDecoder(fam, d, e.skip_ch, e.out_ch, start)
                # The authors' quirk: the counter carries over to the next decoder of one shared model.
                if fam.get("decoder_attention_quirk", False) and self.shared:
                    ds = dec.ds_end
                decs.append(dec)
        self.decoders = nn.ModuleList(decs)

    def num_stages(self):
        return len(self.decoders)

    def encoder_of(self, k):
        return self.encoder if self.shared else self.encoders[k]

    def forward_stage(self, x, t, k):
        """The whole batch through stage k, whatever its times. `t`: float64 tensor [B]."""
        h, hs, emb = self.encoder_of(k)(x, t)
        return self.decoders[k](h, hs, emb)

    def forward(self, x, t):
        """Per-sample routing: sample i goes through the decoder of its own stage."""
        stages = [stage_of(self.boundaries, float(v)) for v in t]
        out = torch.empty_like(x)
        for k in range(self.num_stages()):
            idx = [i for i, s in enumerate(stages) if s == k]
            if idx:
                ii = torch.tensor(idx)
                out[ii] = self.forward_stage(x[ii], t[ii], k)
        return out

    def count(self, prefix):
        return sum(p.numel() for n, p in self.named_parameters() if n.startswith(prefix))

    def stage_params(self, k):
        enc = "encoder." if self.shared else f"encoders.{k}."
        return self.count(enc) + self.count(f"decoders.{k}.")


def load_config(path):
    import tomllib

    with open(path, "rb") as f:
        return tomllib.load(f)

"""Writes tests/fixtures/unet-<family>.safetensors: random weights under msd's tensor names, an input batch
whose times fall in every stage (boundary values included, stages shuffled), and this PyTorch peer's outputs
computed in float64: `out.stage{k}` (the whole batch through stage k; each sample routed to its own stage
must give row i of out.stage{stage of t_i}, checked here). The Rust test `accel/src/unet/peer_tests.rs` loads each file into msd's network.

Usage: make_fixtures.py --msd target/release/msd [--out tests/fixtures]

The configs are msd's tiny presets, read with `msd model-info --preset P --print-config`, and the parameter
counts are checked against `msd model-info --json` before anything is written.

Weights are not msd's initialisation: the authors zero (or scale by 1e-10) the last convolution of every
residual branch and the output head, which would leave most of the network untested. Every tensor here is
drawn at a scale that keeps activations of order one: a weight of fan-in K uniform in +-sqrt(3/K) (variance
1/K), biases uniform in +-0.1, GroupNorm gains 1 +- 0.2, each quantised to 15 levels with a power-of-two
step so that the file stores two per byte (tensor `name`: u8, low nibble q[2j] + 8, high nibble q[2j+1] + 8;
value = offset + q * scale with the f32 scalars `fixture.scale/name` and `fixture.offset/name`): that keeps
each fixture under 1 MB.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_unet  # noqa: E402

FIXTURES = {
    # family: (preset, times in shuffled stage order, boundary values included)
    "ncsnpp": ("tiny-ncsnpp-multistage", [0.8, 0.05, 0.5, 0.4420, 1.0, 0.6308]),
    "ddpmpp": ("tiny-ddpmpp-multistage", [20.0, 0.01, 3.0, 2.5103, 80.0, 7.6577]),
    "ldm": ("tiny-ldm-multistage", [999.0, 0.0, 442.0, 441.0, 631.0, 630.0]),
}


def msd_config(msd, preset):
    out = subprocess.run([msd, "model-info", "--preset", preset, "--print-config"], check=True,
                         capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(out)
        path = f.name
    try:
        return peer_unet.load_config(path)
    finally:
        os.unlink(path)


def msd_info(msd, preset):
    out = subprocess.run([msd, "model-info", "--preset", preset, "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def check_counts(model, info, name):
    """Stage, encoder and total parameter counts of the peer against msd model-info."""
    got = [model.stage_params(k) for k in range(model.num_stages())]
    want = [s["params"] for s in info["stages"]]
    total = sum(p.numel() for p in model.parameters())
    if got != want or total != info["total_params"]:
        raise SystemExit(f"{name}: peer params {got} (total {total}) != msd {want} (total {info['total_params']})")
    return got, total


def randomise(model, gen):
    """Draws every parameter as offset + q * scale with an integer q in [-7, 7] and a power-of-two scale, so
    that the values are exact in f32 and f64 alike and the file can store two per byte. Returns
    {name: (packed u8 array, scale, offset)}: byte j holds q[2j] + 8 in its low and q[2j+1] + 8 in its high
    nibble."""
    stored = {}
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        leaf = name.rsplit(".", 1)[-1]
        module = model.get_submodule(name.rsplit(".", 1)[0])
        if len(shape) >= 2:
            # NIN stores W as [in, out]; every other weight is [out, in, ...].
            fan_in = shape[0] if leaf == "W" else int(np.prod(shape[1:]))
            bound, offset = (3.0 / fan_in) ** 0.5, 0.0
        elif isinstance(module, torch.nn.GroupNorm):
            bound, offset = (0.2, 1.0) if leaf == "weight" else (0.1, 0.0)
        else:
            bound, offset = 0.1, 0.0
        scale = 2.0 ** round(math.log2(bound / 7))
        q = torch.randint(-7, 8, shape, generator=gen)
        with torch.no_grad():
            p.copy_(offset + q.double() * scale)
        nib = (q.flatten() + 8).to(torch.uint8).numpy()
        if nib.size % 2:
            nib = np.append(nib, np.uint8(8))
        stored[name] = (nib[0::2] | (nib[1::2] << 4), scale, offset)
    return stored


def make(msd, family, out_dir, seed):
    preset, times = FIXTURES[family]
    cfg = msd_config(msd, preset)
    info = msd_info(msd, preset)
    model = peer_unet.MultistageUNet(cfg).double().eval()
    counts, total = check_counts(model, info, preset)
    gen = torch.Generator().manual_seed(seed)
    stored = randomise(model, gen)
    fam = cfg["family"]
    b = len(times)
    x = torch.randn((b, fam["in_channels"], fam["resolution"], fam["resolution"]), generator=gen,
                    dtype=torch.float64).float().double()
    t = torch.tensor(times, dtype=torch.float64)
    stages = [peer_unet.stage_of(cfg["boundaries"], v) for v in times]
    assert sorted(set(stages)) == list(range(model.num_stages())), stages
    tensors = {}
    with torch.no_grad():
        peer_unet.FIR_IMPL = "upfirdn"
        for k in range(model.num_stages()):
            tensors[f"fixture.out.stage{k}"] = model.forward_stage(x, t, k).float().numpy()
        # out.routed is not stored: sample i of it is sample i of out.stage{stage of t_i} (GroupNorm and
        # everything else act per sample), and the test gathers it from there.
        routed = model(x, t)
        for i, k in enumerate(stages):
            want = torch.from_numpy(tensors[f"fixture.out.stage{k}"][i]).double()
            assert (routed[i] - want).abs().max() <= 1e-6 * want.abs().max(), "routing disagrees"
        # The timing formulation of the FIR resampling must compute the same function.
        peer_unet.FIR_IMPL = "depthwise"
        fast = model(x, t)
        assert (fast - routed).abs().max() <= 1e-12 * routed.abs().max(), "FIR implementations disagree"
    for name, (u8, scale, offset) in stored.items():
        tensors[name] = u8
        tensors[f"fixture.scale/{name}"] = np.array(scale, dtype=np.float32)
        tensors[f"fixture.offset/{name}"] = np.array(offset, dtype=np.float32)
    tensors["fixture.x"] = x.float().numpy()
    tensors["fixture.t"] = t.numpy()
    meta = {"preset": preset, "stages": json.dumps(stages), "peer": "benches/peer/peer_unet.py",
            "torch": torch.__version__, "seed": str(seed)}
    path = os.path.join(out_dir, f"unet-{family}.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path, metadata=meta)
    print(f"{path}: {preset}, params per stage {counts} (total {total}, = msd), stages {stages}, "
          f"max|out| {routed.abs().max():.3f}, {os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--msd", default="target/release/msd")
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--family", choices=sorted(FIXTURES), action="append")
    a = ap.parse_args()
    torch.set_num_threads(2)
    for fam in a.family or sorted(FIXTURES):
        make(a.msd, fam, a.out, a.seed)


if __name__ == "__main__":
    main()

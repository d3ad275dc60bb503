"""Checks that the PyTorch peer has msd's parameter counts (per stage, per encoder/decoder and in total) for
msd presets and config files: check_counts.py --msd target/release/msd [PRESET|CONFIG.toml ...].
The models are built on PyTorch's meta device (shapes only, no memory)."""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_unet  # noqa: E402

DEFAULT = ["cifar10-ncsnpp-multistage", "cifar10-ncsnpp-unified", "cifar10-ncsnpp-separate",
           "cifar10-ncsnpp-table9-5stage", "cifar10-ddpmpp-edm-multistage", "cifar10-ddpmpp-edm-separate",
           "celebahq-ldm-multistage", "celebahq-ldm-multistage-quirk", "celebahq-ldm-table8-arch1",
           "tiny-ncsnpp-multistage", "tiny-ncsnpp-unified", "tiny-ncsnpp-separate", "tiny-ddpmpp-multistage",
           "tiny-ddpmpp-unified", "tiny-ldm-multistage", "tiny-ldm-unified"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--msd", default="target/release/msd")
    ap.add_argument("models", nargs="*")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    models = a.models or DEFAULT + [os.path.join(here, "configs", f"{f}-small.toml")
                                    for f in ["ncsnpp", "ddpmpp", "ldm"]]
    bad = 0
    for m in models:
        arg = ["--config", m] if m.endswith(".toml") else ["--preset", m]
        info = json.loads(subprocess.run([a.msd, "model-info", *arg, "--json"], check=True,
                                         capture_output=True, text=True).stdout)
        if m.endswith(".toml"):
            cfg = peer_unet.load_config(m)
        else:
            text = subprocess.run([a.msd, "model-info", *arg, "--print-config"], check=True,
                                  capture_output=True, text=True).stdout
            with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
                f.write(text)
            cfg = peer_unet.load_config(f.name)
            os.unlink(f.name)
        with torch.device("meta"):
            model = peer_unet.MultistageUNet(cfg)
        got = [model.stage_params(k) for k in range(model.num_stages())]
        dec = [model.count(f"decoders.{k}.") for k in range(model.num_stages())]
        total = sum(p.numel() for p in model.parameters())
        want = [s["params"] for s in info["stages"]]
        want_dec = [d["params"] for d in info["decoders"]]
        ok = got == want and dec == want_dec and total == info["total_params"]
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {os.path.basename(m):34s} stages {got} total {total:,}"
              + ("" if ok else f"  msd: stages {want} decoders {want_dec} total {info['total_params']:,}"))
    if bad:
        raise SystemExit(f"{bad} model(s) differ")


if __name__ == "__main__":
    main()

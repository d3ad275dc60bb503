#!/usr/bin/env python3
"""Convert pytorch-fid's FID Inception-v3 weights to the safetensors file msd reads.

    python3 scripts/convert_inception_weights.py pt_inception-2015-12-05-6726825d.pth inception-fid.safetensors
    msd fid --a REAL_DIR --b SAMPLES_DIR --features inception:inception-fid.safetensors

Input: pytorch-fid's port of TensorFlow's inception-2015-12-05 graph,
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
(pytorch-fid caches it under ~/.cache/torch/hub/checkpoints/ after its first run). Needs `torch` and
`safetensors` (pip install torch safetensors).

Output: every floating-point tensor of the state dict except the classifier (`fc.*`), as contiguous float32,
under its state-dict name, e.g. `Mixed_5b.branch1x1.conv.weight` and
`Mixed_5b.branch1x1.bn.{weight,bias,running_mean,running_var}`: 94 BasicConv2d layers x 5 tensors = 470
tensors (the list is `msd_accel::inception::tensor_specs`). msd checks every name and shape when loading.
"""
import hashlib
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    import torch
    from safetensors.torch import save_file

    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if not digest.startswith("6726825d"):
        # torch.hub names files by the first 8 hex digits of their SHA-256.
        print(f"warning: {src} has SHA-256 {digest[:8]}..., not pytorch-fid's 6726825d...", file=sys.stderr)
    state = torch.load(src, map_location="cpu", weights_only=True)
    out = {
        k: v.detach().to(torch.float32).contiguous()
        for k, v in state.items()
        if v.is_floating_point() and not k.startswith("fc.")
    }
    convs = {k.rsplit(".", 2)[0] for k in out}
    if len(out) != 470 or len(convs) != 94:
        print(f"error: expected 470 tensors of 94 BasicConv2d layers, got {len(out)} of {len(convs)}", file=sys.stderr)
        return 1
    save_file(out, dst)
    print(f"wrote {dst}: {len(out)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Side-by-side speed of msd's candle U-Nets and the PyTorch peer (benches/peer/peer_unet.py), in one run.

Every case runs twice in its own process, once per side, with the same config, batch, f32 and thread count
(so that each peak RSS is the case's own): the PyTorch side is `bench.py torch-case`, the msd side the
`unet_peer` cargo bench binary (benches/unet_peer.rs) driven by MSD_PEER_CASE. One table follows: case, msd
time, PyTorch time, ratio msd/PyTorch, GFLOP/s of both (true FLOPs of `msd model-info --json`: forward =
the stage's `flops` x batch; a training step counts 3x the forward, the usual forward + backward estimate),
peak RSS of both.

  forward: evaluation mode; msd `forward_stage`, PyTorch under torch.no_grad().
  step:    training mode (dropout on), forward, eps-MSE loss, backward, global-norm clip 1.0, Adam (lr 2e-4)
           of the stage's parameters.

Usage (scripts/bench-peer.sh sets the paths):
  bench.py run --msd target/release/msd --msd-bench <unet_peer binary> [--cases default|all|NAME,...]
               [--rounds R]   (R alternating processes per side, each side keeps its fastest)
  bench.py list
  bench.py torch-case --config C.toml --stage K --batch B --mode fwd|step --warmup W --reps R
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

PAPER = "preset:cifar10-ncsnpp-multistage"


def cases():
    """name -> dict(model, stage, batch, mode, warmup, reps, default)."""
    out = {}
    for fam in ["ncsnpp", "ddpmpp", "ldm"]:
        model = os.path.join(HERE, "configs", f"{fam}-small.toml")
        for mode in ["fwd", "step"]:
            out[f"{fam}-small s0 b32 {mode}"] = dict(model=model, stage=0, batch=32, mode=mode,
                                                    warmup=1, reps=3 if mode == "fwd" else 2, default=True)
    for k in range(3):
        for mode in ["fwd", "step"]:
            # Paper-size cases take minutes each in candle today: one timed run after no warm-up on the msd
            # side would be unfair to neither (a first run allocates), so both sides do warm-up 1, reps 1.
            out[f"paper s{k} b8 {mode}"] = dict(model=PAPER, stage=k, batch=8, mode=mode, warmup=1, reps=1,
                                                default=(mode == "fwd" and k == 2))
    return out


# ------------------------------------------------------------------------------------------------- torch side


def time_in_stage(cfg, k):
    """The middle of stage k's interval in the family's own time unit (same rule as benches/unet_peer.rs)."""
    kind = cfg["family"]["kind"]
    lo, hi = {"ncsnpp": (0.0, 1.0), "ddpmpp": (0.002, 80.0), "ldm": (0.0, 999.0)}[kind]
    b = cfg["boundaries"]
    a = lo if k == 0 else b[k - 1]
    z = hi if k == len(b) else b[k]
    return 0.5 * (a + z)


def torch_case(a):
    import torch
    import torch.nn.functional as F

    import peer_unet

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = peer_unet.load_config(a.config)
    model = peer_unet.MultistageUNet(cfg).float()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()  # [out, in, ...]: in·k²; NIN W [in, out] is square here
                b = (3.0 / fan_in) ** 0.5
                p.uniform_(-b, b)
    fam = cfg["family"]
    c, r = fam["in_channels"], fam["resolution"]
    x = torch.randn(a.batch, c, r, r)
    eps = torch.randn(a.batch, c, r, r)
    t = torch.full((a.batch,), time_in_stage(cfg, a.stage), dtype=torch.float64)
    k = a.stage
    if a.mode == "fwd":
        model.eval()

        def run():
            with torch.no_grad():
                model.forward_stage(x, t, k)
    else:
        model.train()
        enc = "encoder." if model.shared else f"encoders.{k}."
        params = [p for n, p in model.named_parameters() if n.startswith(enc) or n.startswith(f"decoders.{k}.")]
        opt = torch.optim.Adam(params, lr=2e-4)

        def run():
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(model.forward_stage(x, t, k), eps)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if not torch.isfinite(loss):
                raise SystemExit(f"non-finite loss {loss}")

    for _ in range(a.warmup):
        run()
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    s = sorted(times)
    print(json.dumps(dict(times=times, median_s=s[len(s) // 2], min_s=s[0], threads=torch.get_num_threads(),
                          max_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                          torch=torch.__version__)))


# ------------------------------------------------------------------------------------------------ orchestration


def resolve_config(msd, model, cfg_dir):
    """A TOML path for `model` (a path already, or `preset:NAME` written by msd --print-config)."""
    if not model.startswith("preset:"):
        return model
    name = model.split(":", 1)[1]
    path = os.path.join(cfg_dir, f"{name}.toml")
    if not os.path.exists(path):
        text = subprocess.run([msd, "model-info", "--preset", name, "--print-config"], check=True,
                              capture_output=True, text=True).stdout
        with open(path, "w") as f:
            f.write(text)
    return path


def stage_flops(msd, config, stage, cache={}):
    if config not in cache:
        out = subprocess.run([msd, "model-info", "--config", config, "--json"], check=True,
                             capture_output=True, text=True).stdout
        cache[config] = json.loads(out)
    return cache[config]["stages"][stage]["flops"]


def run_side(cmd, env, timeout):
    t0 = time.time()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout} s"}
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit {p.returncode}"]}
    try:
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"no JSON in output: {p.stdout[-200:]!r}"}
    r["wall_s"] = time.time() - t0
    return r


def best(results):
    """The run with the smallest median (an error only if every run failed); all medians kept."""
    ok = [r for r in results if "median_s" in r]
    if not ok:
        return results[-1]
    out = dict(min(ok, key=lambda r: r["median_s"]))
    out["round_medians_s"] = [r.get("median_s") for r in results]
    return out


def fmt_s(r):
    return f"{r['median_s']:.3f}" if "median_s" in r else f"({r.get('error')})"


def gflops(r, flops):
    return f"{flops / r['median_s'] / 1e9:.1f}" if "median_s" in r else "–"


def rss(r):
    return f"{r['max_rss_kb'] / 1024:.0f}" if "max_rss_kb" in r else "–"


def run(a):
    all_cases = cases()
    if a.cases == "default":
        names = [n for n, c in all_cases.items() if c["default"]]
    elif a.cases == "all":
        names = list(all_cases)
    else:
        names = [n.strip() for n in a.cases.split(",") if n.strip()]
        bad = [n for n in names if n not in all_cases]
        if bad:
            raise SystemExit(f"--cases: unknown case(s) {bad}; `bench.py list` shows them")
    os.makedirs(a.out_dir, exist_ok=True)
    cfg_dir = os.path.join(a.out_dir, "configs")
    os.makedirs(cfg_dir, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), RAYON_NUM_THREADS=str(a.threads),
               MKL_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads))
    rows = []
    if a.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    print(f"{len(names)} cases, {a.threads} threads, f32; each side in its own process, "
          f"{a.rounds} round(s)", flush=True)
    for name in names:
        c = dict(all_cases[name])
        if a.warmup is not None:
            c["warmup"] = a.warmup
        if a.reps is not None:
            c["reps"] = a.reps
        config = resolve_config(a.msd, c["model"], cfg_dir)
        fwd_flops = stage_flops(a.msd, config, c["stage"]) * c["batch"]
        flops = fwd_flops * (3 if c["mode"] == "step" else 1)
        tcmd = [sys.executable, os.path.abspath(__file__), "torch-case", "--config", config, "--stage",
                str(c["stage"]), "--batch", str(c["batch"]), "--mode", c["mode"], "--warmup", str(c["warmup"]),
                "--reps", str(c["reps"]), "--threads", str(a.threads)]
        spec = (f"model={config} stage={c['stage']} batch={c['batch']} mode={c['mode']} "
                f"warmup={c['warmup']} reps={c['reps']}")
        sides = {"torch": lambda: run_side(tcmd, env, a.case_timeout),
                 "msd": lambda: run_side([a.msd_bench], dict(env, MSD_PEER_CASE=spec), a.case_timeout)}
        # With --rounds R each side runs R times, the order alternating (PyTorch first in odd rounds), and
        # keeps its fastest process: on a VM whose speed drifts over minutes, one slow stretch then costs
        # neither side its result.
        runs = {"torch": [], "msd": []}
        for k in range(a.rounds):
            for side in (["torch", "msd"] if k % 2 == 0 else ["msd", "torch"]):
                runs[side].append(sides[side]())
        tr, mr = best(runs["torch"]), best(runs["msd"])
        ratio = f"{mr['median_s'] / tr['median_s']:.1f}" if "median_s" in mr and "median_s" in tr else "–"
        row = dict(case=name, msd=mr, torch=tr, flops=flops, ratio=ratio)
        rows.append(row)
        print(f"  {name}: msd {fmt_s(mr)} s, PyTorch {fmt_s(tr)} s, ratio {ratio}", flush=True)
    torch_version = next((r["torch"].get("torch") for r in rows if "torch" in r["torch"]), "?")
    lines = [
        f"| case | msd (s) | PyTorch {torch_version} (s) | msd / PyTorch | msd GFLOP/s | PyTorch GFLOP/s "
        f"| msd peak RSS (MiB) | PyTorch peak RSS (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {fmt_s(r['msd'])} | {fmt_s(r['torch'])} | {r['ratio']} | "
                     f"{gflops(r['msd'], r['flops'])} | {gflops(r['torch'], r['flops'])} | {rss(r['msd'])} | "
                     f"{rss(r['torch'])} |")
    # Which SIMD kernels the gemm crate ran msd's GEMMs with (AVX-512, AVX2+FMA or portable).
    kernels = sorted({r["msd"]["gemm_kernels"] for r in rows if r["msd"].get("gemm_kernels")})
    if kernels:
        lines.append("")
        lines.append(f"msd's GEMM kernels: {', '.join(kernels)}")
    table = "\n".join(lines)
    print()
    print(table)
    with open(os.path.join(a.out_dir, "results.json"), "w") as f:
        json.dump(dict(threads=a.threads, rows=rows), f, indent=1)
    with open(os.path.join(a.out_dir, "table.md"), "w") as f:
        f.write(table + "\n")
    print(f"\nwritten: {a.out_dir}/results.json, {a.out_dir}/table.md")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--msd", required=True, help="the msd binary (for model-info)")
    r.add_argument("--msd-bench", required=True, help="the unet_peer bench binary")
    r.add_argument("--cases", default="default", help="default, all, or a comma-separated list of names")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--case-timeout", type=int, default=900, help="seconds per case and side")
    r.add_argument("--out-dir", default="target/peer")
    r.add_argument("--warmup", type=int, help="untimed runs per case and side (overrides the case's)")
    r.add_argument("--reps", type=int, help="timed runs per case and side (overrides the case's; median)")
    r.add_argument("--rounds", type=int, default=1,
                   help="processes per case and side, alternating; each side keeps its fastest (default 1)")
    sub.add_parser("list")
    t = sub.add_parser("torch-case")
    t.add_argument("--config", required=True)
    t.add_argument("--stage", type=int, default=0)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--mode", choices=["fwd", "step"], default="fwd")
    t.add_argument("--warmup", type=int, default=1)
    t.add_argument("--reps", type=int, default=3)
    t.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.cmd == "run":
        run(a)
    elif a.cmd == "list":
        for n, c in cases().items():
            print(f"{n:28s} {'default' if c['default'] else ''}")
    else:
        torch_case(a)


if __name__ == "__main__":
    main()

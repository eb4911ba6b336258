"""Video benchmarks: the cost of joint and factorised attention per clip length, and our DiT
against diffusers' transformers of the same width and depth.

* ``attention`` — a training step (forward + backward + AdamW) of our VideoDiT with joint and
  with factorised attention at several clip lengths: median milliseconds and the activation
  memory saved for the backward pass (counted exactly, one storage once, through autograd's
  saved-tensor hooks; on a GPU also the peak allocated memory). Factorised attention's cost
  should grow linearly in ``T``, joint attention's faster.
* ``diffusers`` — side by side in one process, alternating each repeat: our factorised DiT
  against diffusers' ``LatteTransformer3DModel`` (alternating spatial / temporal blocks, the
  same width, heads and number of blocks, patch and clip; its blocks also carry a
  cross-attention to a one-token caption and a GEGLU feed-forward, so parameter counts are
  printed beside the times), and our DiT with ``T = 1`` against diffusers'
  ``DiTTransformer2DModel`` (the same adaLN-Zero block) on images.

Usage::

    python benchmarks/video.py attention [--frames 4 8 16 32] [--threads 2 --repeats 5]
    python benchmarks/video.py diffusers [--threads 2 --repeats 10]

``diffusers`` needs the ``bench`` extra (``pip install omnidiff[bench]``).
"""

from __future__ import annotations

import argparse

import torch

from _timing import alternate

SIZE, CHANNELS = 32, 1


def _ours(frames: int, attention: str, depth: int, width: int, heads: int, patch: int,
          classes: int = 10):
    from omnidiff.core.conditions import LabelCond
    from omnidiff_domains.video.dit import VideoDiT

    return VideoDiT((frames, CHANNELS, SIZE, SIZE), LabelCond(classes), depth=depth, width=width,
                    heads=heads, patch=(1, patch, patch), attention=attention)


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward during ``fn()`` (each storage once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _train_step(net, batch: int, frames: int, device: torch.device):
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, frames, CHANNELS, SIZE, SIZE, device=device)
    t = torch.rand(batch, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        loss = (net(x, t, y) - x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def forward() -> torch.Tensor:
        return (net(x, t, y) - x).pow(2).mean()

    return step, forward


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def attention(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    print(f"training step of VideoDiT (depth {args.depth}, width {args.width}, {args.heads} "
          f"heads, patch 1x{args.patch}x{args.patch}, {SIZE}x{SIZE} frames, batch {args.batch}) "
          f"on {device}, {torch.get_num_threads()} threads; medians of {args.repeats}")
    rows = []
    for frames in args.frames:
        nets = {a: _ours(frames, a, args.depth, args.width, args.heads, args.patch).to(device)
                for a in ("joint", "factorised")}
        fns = {a: _train_step(n, args.batch, frames, device) for a, n in nets.items()}

        def run(name: str, fns=fns) -> None:
            fns[name][0]()
            _sync(device)

        ms = alternate(list(nets), {"step": run}, warmup=1, repeats=args.repeats)
        for a in nets:
            mem = _saved_bytes(fns[a][1]) / 2 ** 20
            peak = None
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                run(a)
                peak = torch.cuda.max_memory_allocated() / 2 ** 20
            tokens = frames * (SIZE // args.patch) ** 2
            rows.append((frames, tokens, a, ms[(a, "step")], mem, peak))
    base = {a: next(r for r in rows if r[2] == a) for a in ("joint", "factorised")}
    ratio, peak_col = f"x T={args.frames[0]}", "  peak MiB" if device.type == "cuda" else ""
    print(f"{'T':>4} {'tokens':>7} {'attention':>11} {'step ms':>9} {ratio:>7} {'saved MiB':>10} "
          f"{ratio:>7}{peak_col}")
    for frames, tokens, a, ms_, mem, peak in rows:
        b = base[a]
        line = (f"{frames:>4} {tokens:>7} {a:>11} {ms_:>9.1f} {ms_ / b[3]:>7.2f} {mem:>10.1f} "
                f"{mem / b[4]:>7.2f}")
        print(line + (f" {peak:>9.1f}" if peak is not None else ""))
    print(f"(T grows x{args.frames[-1] / args.frames[0]:g}: linear cost would be x"
          f"{args.frames[-1] / args.frames[0]:g})")


def _latte(frames: int, depth: int, width: int, heads: int, patch: int):
    from diffusers import LatteTransformer3DModel

    return LatteTransformer3DModel(num_attention_heads=heads, attention_head_dim=width // heads,
                                   in_channels=CHANNELS, out_channels=CHANNELS,
                                   num_layers=depth // 2, sample_size=SIZE, patch_size=patch,
                                   video_length=frames, norm_type="ada_norm_single",
                                   caption_channels=width, cross_attention_dim=width)


def _dit2d(depth: int, width: int, heads: int, patch: int):
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=width // heads,
                                 in_channels=CHANNELS, out_channels=CHANNELS, num_layers=depth,
                                 sample_size=SIZE, patch_size=patch, num_embeds_ada_norm=10)


def compare_diffusers(args: argparse.Namespace) -> None:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise SystemExit("benchmarks/video.py diffusers needs diffusers: "
                         "pip install 'omnidiff[bench]'") from None
    device = torch.device(args.device)
    b, f, d, w, h, p = args.batch, args.frames[0], args.depth, args.width, args.heads, args.patch
    ours_v = _ours(f, "factorised", d, w, h, p).to(device)
    latte = _latte(f, d, w, h, p).to(device)
    ours_i = _ours(1, "joint", d, w, h, p).to(device)
    dit = _dit2d(d, w, h, p).to(device)
    x = torch.randn(b, f, CHANNELS, SIZE, SIZE, device=device)
    t = torch.rand(b, device=device)
    y = torch.randint(0, 10, (b,), device=device)
    caption = torch.randn(b, 1, w, device=device)
    calls = {
        "ours factorised": (ours_v, lambda: ours_v(x, t, y)),
        "diffusers Latte": (latte, lambda: latte(x.transpose(1, 2), timestep=t * 999,
                                                 encoder_hidden_states=caption,
                                                 return_dict=False)[0]),
        "ours T=1": (ours_i, lambda: ours_i(x[:, :1], t, y)),
        "diffusers DiT": (dit, lambda: dit(x[:, 0], timestep=t * 999, class_labels=y,
                                           return_dict=False)[0]),
    }
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, (m, _) in calls.items()}

    def train(name: str) -> None:
        out = calls[name][1]()
        out.float().pow(2).mean().backward()
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)
        _sync(device)

    def infer(name: str) -> None:
        with torch.no_grad():
            calls[name][1]()
        _sync(device)

    ms = alternate(list(calls), {"train": train, "sample": infer}, warmup=2,
                   repeats=args.repeats)
    print(f"depth {d}, width {w}, {h} heads, patch {p}, {f} frames of {SIZE}x{SIZE}, batch {b}, "
          f"{device}, {torch.get_num_threads()} threads; medians of {args.repeats}")
    print(f"{'model':<17} {'params':>9} {'train ms':>9} {'sample ms':>10}")
    for name, (m, _) in calls.items():
        n = sum(q.numel() for q in m.parameters())
        print(f"{name:<17} {n:>9,} {ms[(name, 'train')]:>9.1f} {ms[(name, 'sample')]:>10.1f}")
    for ours, theirs in (("ours factorised", "diffusers Latte"), ("ours T=1", "diffusers DiT")):
        print(f"{ours} / {theirs}: train {ms[(ours, 'train')] / ms[(theirs, 'train')]:.2f}, "
              f"sample {ms[(ours, 'sample')] / ms[(theirs, 'sample')]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    for name, frames in (("attention", [4, 8, 16, 32]), ("diffusers", [8])):
        s = sub.add_parser(name)
        s.add_argument("--frames", type=int, nargs="+", default=frames)
        s.add_argument("--depth", type=int, default=6)
        s.add_argument("--width", type=int, default=96)
        s.add_argument("--heads", type=int, default=4)
        s.add_argument("--patch", type=int, default=4)
        s.add_argument("--batch", type=int, default=4)
        s.add_argument("--repeats", type=int, default=5)
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    (attention if args.what == "attention" else compare_diffusers)(args)


if __name__ == "__main__":
    main()

"""Our image U-Net vs diffusers' ``UNet2DModel`` with the same channel plan, side by side.

For each configuration both networks get the same blocks per level (``layers_per_block``),
the same ``block_out_channels``, attention at the same resolutions (+ the middle), GroupNorm
with the same groups, a scale-shift time embedding (diffusers: ``resnet_time_scale_shift=
"scale_shift"``) and a class embedding. Measured in one process, alternating ours / theirs
each repeat (so load drifts hit both), after warm-up; the table shows medians:

* ``train``: forward + backward + AdamW step at the training batch size;
* ``sample``: one forward without gradients at the sampling batch size (one solver step).

Usage::

    python benchmarks/unet_vs_diffusers.py                 # all configurations
    python benchmarks/unet_vs_diffusers.py --config digits --threads 1 --repeats 20

Needs the ``bench`` extra (``pip install omnidiff[bench]``: diffusers).
"""

from __future__ import annotations

import argparse

import torch

from _timing import alternate

CONFIGS = {
    # name: (channels, size, block_out_channels, layers_per_block, attn_resolutions,
    #        train batch, sample batch)
    "digits": (1, 8, (32, 64), 2, (4,), 128, 512),
    "cifar_small": (3, 32, (64, 128, 128), 2, (16,), 16, 64),
}


def ours(c, size, chans, layers, attn, num_classes, channels_last=False):
    from omnidiff_domains.image.unet import build_unet

    mult = [ch // chans[0] for ch in chans]
    return build_unet((c, size, size), num_classes, base_channels=chans[0], channel_mult=mult,
                      num_res_blocks=layers, attn_resolutions=list(attn), dropout=0.0,
                      num_head_channels=32, norm_groups=32, channels_last=channels_last)


def theirs(c, size, chans, layers, attn, num_classes):
    from diffusers import UNet2DModel

    res = [size // 2 ** i for i in range(len(chans))]
    down = tuple("AttnDownBlock2D" if r in attn else "DownBlock2D" for r in res)
    up = tuple("AttnUpBlock2D" if r in attn else "UpBlock2D" for r in reversed(res))
    return UNet2DModel(sample_size=size, in_channels=c, out_channels=c,
                       block_out_channels=tuple(chans), layers_per_block=layers,
                       down_block_types=down, up_block_types=up, attention_head_dim=32,
                       norm_num_groups=32, resnet_time_scale_shift="scale_shift",
                       num_class_embeds=num_classes, dropout=0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--channels-last", action="store_true", help="our U-Net in channels_last")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = list(CONFIGS) if args.config == "all" else [args.config]
    rows = []
    for name in names:
        c, size, chans, layers, attn, bt, bsmp = CONFIGS[name]
        nets = {"ours": ours(c, size, chans, layers, attn, 10, args.channels_last),
                "diffusers": theirs(c, size, chans, layers, attn, 10)}
        x = torch.randn(bt, c, size, size)
        t = torch.rand(bt)
        y = torch.randint(0, 10, (bt,))
        xs = torch.randn(bsmp, c, size, size)
        ts = torch.rand(bsmp)
        ys = torch.randint(0, 10, (bsmp,))
        opts = {k: torch.optim.AdamW(n.parameters(), lr=1e-4) for k, n in nets.items()}

        def call(k, xx, tt, yy):
            if k == "ours":
                return nets[k](xx, tt, yy)
            return nets[k](xx, tt * 1000, class_labels=yy).sample

        def train_step(k):
            out = call(k, x, t, y)
            loss = (out - x).square().mean()
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()

        @torch.no_grad()
        def sample_step(k):
            call(k, xs, ts, ys)

        med = alternate(nets, {"train": train_step, "sample": sample_step}, args.warmup,
                        args.repeats)
        params = {k: sum(q.numel() for q in n.parameters()) for k, n in nets.items()}
        for what, b in (("train", bt), ("sample", bsmp)):
            rows.append((name, what, b, med[("ours", what)], med[("diffusers", what)],
                         med[("ours", what)] / med[("diffusers", what)], params["ours"],
                         params["diffusers"]))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"warmup {args.warmup}, repeats {args.repeats}, medians in ms"
          + (", ours channels_last" if args.channels_last else ""))
    head = (f"{'config':12s} {'step':6s} {'batch':>5s} {'ours':>9s} {'diffusers':>10s} "
            f"{'ratio':>6s} {'params ours':>12s} {'params diff':>12s}")
    print(head)
    print("-" * len(head))
    for name, what, b, mo, md, r, po, pd in rows:
        print(f"{name:12s} {what:6s} {b:5d} {mo:9.1f} {md:10.1f} {r:6.2f} {po:12,d} {pd:12,d}")


if __name__ == "__main__":
    main()

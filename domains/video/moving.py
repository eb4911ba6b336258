"""``moving_digits``: scikit-learn's 8x8 digits, upscaled, moving with constant velocity and
bouncing off the walls of a canvas (Srivastava et al. 2015's Moving MNIST, offline).

Positions and velocities are integers (pixels per frame), so every frame is an exact copy of
the digit: a model's blur or drift is the model's. A clip holds one or two digits (ink
combined by maximum); its label is the first digit's class. Everything comes from one
seeded generator.
"""

from __future__ import annotations

import torch

__all__ = ["bounce", "moving_digits"]


def bounce(start: torch.Tensor, velocity: torch.Tensor, frames: int, high: int) -> torch.Tensor:
    """Integer positions in ``[0, high]`` moving by ``velocity`` per frame and reflecting at
    both walls: start, velocity ``(N, 2)`` -> ``(N, frames, 2)``."""
    pos, vel, out = start.clone(), velocity.clone(), [start.clone()]
    for _ in range(frames - 1):
        pos = pos + vel
        low_hit, high_hit = pos < 0, pos > high
        pos = torch.where(low_hit, -pos, torch.where(high_hit, 2 * high - pos, pos))
        vel = torch.where(low_hit | high_hit, -vel, vel)
        out.append(pos.clone())
    return torch.stack(out, dim=1)  # (N, T, 2)


def _trajectories(n: int, frames: int, high: int, max_speed: int, g: torch.Generator
                  ) -> torch.Tensor:
    start = torch.randint(0, high + 1, (n, 2), generator=g)
    vel = torch.randint(-max_speed, max_speed + 1, (n, 2), generator=g)
    still = (vel == 0).all(1)
    vel[still, 0] = 1  # every digit moves
    return bounce(start, vel, frames, high)  # (N, T, 2) as (row, col)


def moving_digits(images: torch.Tensor, labels: torch.Tensor, n: int, g: torch.Generator, *,
                  frames: int = 8, size: int = 32, max_digits: int = 1, p_two: float = 0.5,
                  max_speed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` clips ``(n, frames, 1, size, size)`` in [-1, 1] from digit images ``(M, 1, d, d)``
    in [-1, 1]; returns (clips, labels ``(n,)``, positions ``(n, frames, 2)`` of the first
    digit's top-left corner)."""
    d = images.shape[-1]
    if d > size:
        raise ValueError(f"data.digit_size={d} does not fit the canvas data.size={size}")
    count = 1 + (torch.rand(n, generator=g) < p_two).long() * int(max_digits > 1)  # (n,)
    pick = torch.randint(0, len(images), (n, 2), generator=g)  # (n, 2)
    paths = _trajectories(2 * n, frames, size - d, max_speed, g).view(n, 2, frames, 2)
    clips = torch.full((n, frames, 1, size, size), -1.0)
    for i in range(n):
        for j in range(int(count[i])):
            digit = images[pick[i, j], 0]  # (d, d)
            for f in range(frames):
                r, c = (int(v) for v in paths[i, j, f])
                win = clips[i, f, 0, r:r + d, c:c + d]
                torch.maximum(win, digit, out=win)
    return clips, labels[pick[:, 0]].clone(), paths[:, 0]

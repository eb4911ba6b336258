"""GroupNorm with a group count that always divides the channels."""

from __future__ import annotations

from torch import nn

__all__ = ["group_count", "group_norm"]


def group_count(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= ``max_groups`` dividing ``channels`` (GroupNorm needs one)."""
    g = max(1, min(int(max_groups), int(channels)))
    while channels % g:
        g -= 1
    return g


def group_norm(channels: int, max_groups: int = 32, eps: float = 1e-5) -> nn.GroupNorm:
    """``nn.GroupNorm`` over ``channels`` with :func:`group_count` groups."""
    return nn.GroupNorm(group_count(channels, max_groups), channels, eps=eps)

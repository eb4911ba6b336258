"""The ``video`` domain: a diffusion transformer over spacetime patches.

Registered under the entry-point group ``omnidiff.domains`` as
``video = "omnidiff_domains.video:VideoDomain"``. Submodules, one concept each:
:mod:`.dit` (the network and its size presets), :mod:`.moving` (the generated moving digits),
:mod:`.files` (GIFs, frame folders, video files), :mod:`.captions` and :mod:`.text_data`
(captioned moving digits for text-to-video), :mod:`.data` (``VideoData`` and the frame
masks), :mod:`.frames` (centres of mass and the classifier's reading of frames),
:mod:`.metrics` (per-frame class accuracy, temporal consistency, continuation error,
Fréchet distance), :mod:`.text_metrics` (prompted digit and direction),
:mod:`.artifacts` (GIFs and frame strips); Hydra defaults in
``conf/domain/video.yaml``.

Heavy imports (Lightning, timm, matplotlib, scikit-learn) happen on first use. The digits
and the digits classifier come from the ``image`` domain, through the registry.
"""

from __future__ import annotations

from typing import Any

from omnidiff.errors import UnknownDomainError
from omnidiff.plugins.contract import LazyDomain, lazy_exports
from omnidiff.plugins.registry import get_domain

__all__ = ["VideoDomain", "VideoData", "VideoDiT"]


class VideoDomain(LazyDomain):
    """Clips, event ``(T, C, H, W)`` with values in [-1, 1].

    Network: :class:`~omnidiff_domains.video.dit.VideoDiT` (keys: size, depth, width, heads,
    patch, pos, attention, mlp_ratio, dropout, compile). Conditions (``data.cond``): label,
    none, frames (given frames + mask), label+frames, text (a prompt), text+frames.
    Artifacts: a GIF per clip, a frame-strip PNG (rows named by their prompts), ``.pt``,
    ``.npy``. Metrics: see :mod:`omnidiff_domains.video.metrics`.
    """

    name = "video"
    config_searchpath = "pkg://omnidiff_domains.video.conf"
    data_factory = ".data:VideoData"
    network_factory = ".dit:build_dit"
    artifact_writer = ".artifacts:save_artifacts"
    metrics_fn = ".metrics:video_metrics"
    sample_defaults = {"clip_x0": 1.0}  # pixels live in [-1, 1]
    main_metric = "fd"  # what `omnidiff compare` plots first


def _image_domain() -> Any:
    """The installed ``image`` domain (its ``digits_arrays`` and ``digits_classifier``); a
    one-line error when it is not installed."""
    try:
        return get_domain("image")
    except UnknownDomainError:
        raise UnknownDomainError(
            "the video domain's moving digits and metrics need the image domain, which is not "
            "installed (no 'image' in the entry-point group 'omnidiff.domains')") from None


__getattr__ = lazy_exports(__name__, {"VideoData": ".data:VideoData", "VideoDiT": ".dit:VideoDiT"})

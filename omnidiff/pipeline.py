"""One inference API for every domain: ``omnidiff.load(checkpoint).generate(n)``.

>>> pipe = omnidiff.load("runs/points2d/.../model.pt")       # or a Lightning .ckpt
>>> x = pipe.generate(1000, sampler="dpmpp_2m", steps=20, seed=0)   # (1000, *event)
>>> pipe.save(x, "out/")                                      # the domain's PNG / WAV / ...
>>> pipe.metrics(x)                                           # vs. the domain's reference data
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

from .model import DiffusionModel

__all__ = ["Pipeline", "load", "generate_samples", "PipelineError"]


class PipelineError(ValueError):
    """A user-facing mistake in a generate/save/metrics call (one line)."""


def _auto_batch(n: int, event_shape: Sequence[int]) -> int:
    numel = max(1, math.prod(event_shape))
    return max(1, min(n, 1024, max(16, 2 ** 20 // numel)))


def _as_labels(cond: Any, n: int, num_classes: int) -> torch.Tensor | None:
    """int | list | LongTensor -> (n,) long labels, checked against the model."""
    if cond is None:
        return None
    if num_classes <= 0:
        raise PipelineError("this model is unconditional: drop cond= (and guidance=)")
    c = torch.as_tensor(cond)
    if c.is_floating_point() or c.dtype == torch.bool:
        raise PipelineError(f"cond must be integer class labels, got dtype {c.dtype}")
    c = c.long().reshape(-1)
    if c.numel() == 1:
        c = c.expand(n).clone()
    if c.numel() != n:
        raise PipelineError(f"cond has {c.numel()} labels for n={n} samples; pass one label "
                            "or exactly n")
    bad = c[(c < 0) | (c >= num_classes)]
    if bad.numel():
        raise PipelineError(f"class label {int(bad[0])} is out of range; this model has "
                            f"{num_classes} classes (0..{num_classes - 1})")
    return c


@torch.no_grad()
def generate_samples(model: DiffusionModel, n: int, *, event_shape: Sequence[int],
                     num_classes: int = 0, sampler: str = "dpmpp_2m", steps: int = 20,
                     guidance: float | None = None, cond: Any = None, seed: int | None = None,
                     batch_size: int | None = None, device: torch.device | str | None = None,
                     progress: bool | None = None, **options: Any
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draw ``n`` samples ``(n, *event)`` (on CPU) and their labels ``(n,)`` (or None).

    ``options`` go to :func:`omnidiff.samplers.sample` (``grid``, ``clip_x0``, ``eta``,
    ``order``, ``s_churn``, ...).

    All noise comes from one ``torch.Generator`` seeded with ``seed`` (a random seed when
    None), so results do not depend on ``batch_size`` for deterministic samplers. A
    class-conditional model with ``cond=None`` draws labels uniformly from that generator.
    """
    from .guidance import classifier_free
    from .samplers import SAMPLERS, sample

    if int(n) < 1:
        raise PipelineError(f"n must be at least 1, got {n}")
    n = int(n)
    if sampler not in SAMPLERS:
        raise PipelineError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    if int(steps) < 1:
        raise PipelineError(f"steps must be at least 1, got {steps}")
    if guidance is not None and num_classes <= 0:
        raise PipelineError("guidance needs a class-conditional model; this one is "
                            "unconditional (drop guidance=)")
    labels = _as_labels(cond, n, num_classes)
    if seed is None:
        seed = int(torch.randint(0, 2 ** 31 - 1, ()).item())
    gen = torch.Generator().manual_seed(int(seed))
    if num_classes > 0 and labels is None:
        labels = torch.randint(0, num_classes, (n,), generator=gen)
    param = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (
        param.device if param is not None else torch.device("cpu"))
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    noise = torch.randn((n, *event_shape), generator=gen, dtype=torch.float32)  # (n, *event)
    # stochastic samplers draw from a device generator seeded from the CPU one
    dev_gen = torch.Generator(device=device).manual_seed(
        int(torch.randint(0, 2 ** 62, (), generator=gen)))
    bs = int(batch_size) if batch_size else _auto_batch(n, event_shape)
    starts = range(0, n, bs)
    if progress is None:
        progress = len(starts) > 4
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="sampling", unit="batch", leave=False, disable=None)
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in starts:
            x_T = noise[i:i + bs].to(device=device, dtype=dtype)  # (b, *event)
            c = labels[i:i + bs].to(device) if labels is not None else None
            fn = classifier_free(model, c, guidance)
            x0 = sample(fn, x_T, schedule=model.schedule, prediction=model.prediction,
                        sampler=sampler, steps=int(steps), generator=dev_gen, **options)
            out.append(x0.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out), labels


def sampler_options(domain: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The caller's sampler options over the domain's optional ``sample_defaults``."""
    return {**getattr(domain, "sample_defaults", {}), **options}


class Pipeline:
    """A trained model ready for sampling, with its domain's artifact writer and metrics."""

    def __init__(self, model: DiffusionModel, *, domain: Any, domain_name: str,
                 event_shape: Sequence[int], num_classes: int = 0,
                 data_cfg: dict[str, Any] | None = None, info: dict[str, Any] | None = None):
        self.model = model.eval()
        self.domain = domain
        self.domain_name = domain_name
        self.event_shape = tuple(int(s) for s in event_shape)
        self.num_classes = int(num_classes)
        self.data_cfg = dict(data_cfg or {})
        self.info = dict(info or {})
        self.last_cond: torch.Tensor | None = None
        self._last_samples: torch.Tensor | None = None
        self._reference: tuple[int, Any] | None = None

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: torch.device | str) -> "Pipeline":
        self.model.to(device)
        return self

    def __repr__(self) -> str:
        return (f"Pipeline(domain={self.domain_name!r}, event_shape={self.event_shape}, "
                f"num_classes={self.num_classes}, schedule={self.model.schedule!r}, "
                f"prediction={self.model.prediction!r})")

    def generate(self, n: int, *, sampler: str = "dpmpp_2m", steps: int = 20,
                 guidance: float | None = None, cond: Any = None, seed: int | None = None,
                 batch_size: int | None = None, progress: bool | None = None,
                 **options: Any) -> torch.Tensor:
        """``n`` samples ``(n, *event)`` on CPU. ``cond``: int, list or LongTensor of labels.
        ``options`` go to the sampler: ``grid=``, ``clip_x0=`` (e.g. 1.0 for images in
        [-1, 1]), ``eta=``, ``order=``, ... (see :func:`omnidiff.samplers.sample`), over the
        domain's ``sample_defaults`` (the image domain clips x0 to [-1, 1]).

        For a class-conditional model without ``cond`` the labels are drawn uniformly (with
        ``seed``) and kept in :attr:`last_cond`; :meth:`save` and :meth:`metrics` use them.
        """
        options = sampler_options(self.domain, options)
        x, labels = generate_samples(self.model, n, event_shape=self.event_shape,
                                     num_classes=self.num_classes, sampler=sampler,
                                     steps=steps, guidance=guidance, cond=cond, seed=seed,
                                     batch_size=batch_size, device=self.device,
                                     progress=progress, **options)
        self.last_cond, self._last_samples = labels, x
        return x

    def log_likelihood(self, x: torch.Tensor, *, cond: Any = None, divergence: str = "auto",
                       solver: str = "rk45", steps: int = 50, rtol: float = 1e-5,
                       atol: float = 1e-5, dequantize: int | None = None,
                       seed: int | None = 0, batch_size: int | None = None):
        """Exact log-likelihood of data ``x: (n, *event)`` through the probability-flow ODE.

        Returns :class:`~omnidiff.likelihood.LogLikelihood` (``nats`` and ``bits_per_dim``
        per sample, ``nfe``). ``divergence``: exact | hutchinson | auto; ``solver``: rk45 |
        heun (``steps``); ``dequantize``: levels of discrete data in [-1, 1] (e.g. 256).
        """
        from .guidance import conditional
        from .likelihood import LogLikelihood, log_likelihood

        self._check(x)
        labels = _as_labels(cond, x.shape[0], self.num_classes)
        gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
        bs = int(batch_size) if batch_size else _auto_batch(x.shape[0], self.event_shape)
        dtype = next(self.model.parameters()).dtype
        parts, nfe = [], 0
        for i in range(0, x.shape[0], bs):
            c = labels[i:i + bs].to(self.device) if labels is not None else None
            r = log_likelihood(conditional(self.model, c), x[i:i + bs].to(self.device),
                               schedule=self.model.schedule, prediction=self.model.prediction,
                               divergence=divergence, solver=solver, steps=steps, rtol=rtol,
                               atol=atol, dequantize=dequantize, generator=gen, dtype=dtype)
            parts.append(r)
            nfe += r.nfe
        return LogLikelihood(nats=torch.cat([r.nats.cpu() for r in parts]),
                             bits_per_dim=torch.cat([r.bits_per_dim.cpu() for r in parts]),
                             nfe=nfe)

    def _cond_for(self, samples: torch.Tensor, cond: Any) -> torch.Tensor | None:
        if cond is not None:
            return _as_labels(cond, samples.shape[0], self.num_classes)
        if samples is self._last_samples:
            return self.last_cond
        return None

    def save(self, samples: torch.Tensor, out_dir: str | Path, *, cond: Any = None,
             prefix: str = "samples") -> list[Path]:
        """Write the domain's artifacts (images, audio, plots + raw tensors) to ``out_dir``."""
        self._check(samples)
        return [Path(p) for p in self.domain.save_artifacts(
            samples, Path(out_dir), cond=self._cond_for(samples, cond), prefix=prefix)]

    def reference(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` held-out samples from the training data's config (cached)."""
        if self._reference is None or self._reference[0] < n:
            dm = self.domain.build_data(**self.data_cfg)
            for hook in ("prepare_data", "setup"):
                if hasattr(dm, hook):
                    getattr(dm, hook)(*(("fit",) if hook == "setup" else ()))
            ref = dm.reference(n, torch.Generator().manual_seed(seed))
            self._reference = (n, ref)
        x, c = self._reference[1]
        return x[:n], (c[:n] if c is not None else None)

    def metrics(self, samples: torch.Tensor, *, n_ref: int = 2048, cond: Any = None,
                seed: int = 0) -> dict[str, float]:
        """The domain's quality metrics of ``samples`` against ``n_ref`` reference samples."""
        self._check(samples)
        ref, ref_cond = self.reference(n_ref, seed)
        out = self.domain.metrics(samples, ref, cond=self._cond_for(samples, cond),
                                  ref_cond=ref_cond)
        return {k: float(v) for k, v in out.items()}

    def _check(self, samples: torch.Tensor) -> None:
        if not isinstance(samples, torch.Tensor) or tuple(samples.shape[1:]) != self.event_shape:
            shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples)
            raise PipelineError(f"samples must have shape (n, {', '.join(map(str, self.event_shape))})"
                                f" for this model, got {shape}")

    @classmethod
    def from_payload(cls, payload: dict[str, Any], device: torch.device | str | None = None
                     ) -> "Pipeline":
        from .registry import get_domain

        domain = get_domain(payload["domain"])
        event_shape = tuple(int(s) for s in payload["event_shape"])
        num_classes = int(payload["num_classes"])
        net = domain.build_network(event_shape, num_classes, **payload["model"])
        model = DiffusionModel(net, dict(payload["schedule"]), payload["prediction"],
                               sigma_data=float(payload["sigma_data"]))
        try:
            model.load_state_dict(payload["state_dict"])
        except RuntimeError as exc:
            from .checkpoint import CheckpointError
            ours, theirs = set(model.state_dict()), set(payload["state_dict"])
            raise CheckpointError(
                f"the checkpoint's weights do not fit the {payload['domain']!r} network built "
                f"from its config ({len(ours - theirs)} missing, {len(theirs - ours)} unexpected"
                f", or mismatched shapes): was it written by another version of the domain "
                f"plugin (checkpoint: omnidiff {payload.get('omnidiff_version')})?") from exc
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device).eval()
        info = {k: v for k, v in payload.items() if k != "state_dict"}
        return cls(model, domain=domain, domain_name=payload["domain"], event_shape=event_shape,
                   num_classes=num_classes, data_cfg=payload.get("data") or {}, info=info)


def load(checkpoint: str | Path, device: torch.device | str | None = None) -> Pipeline:
    """A :class:`Pipeline` from ``model.pt`` (``omnidiff train``'s export) or a Lightning
    ``.ckpt`` of :class:`~omnidiff.training.DiffusionModule` (EMA weights when trained with EMA).
    Both are read with ``torch.load(weights_only=True)``."""
    from .checkpoint import read_checkpoint

    return Pipeline.from_payload(read_checkpoint(checkpoint), device=device)

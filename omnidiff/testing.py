"""The domain contract as a reusable check: ``check_domain(domain)``.

A plugin author runs it in their own test suite (omnidiff runs it over every registered domain
in ``tests/test_domain_contract.py``)::

    from omnidiff.testing import check_domain
    from my_plugin import MyDomain

    def test_contract(tmp_path):
        check_domain(MyDomain(), data={"train_size": 256}, model={"width": 16}, out_dir=tmp_path)

It exercises the whole :class:`~omnidiff.domain.Domain` contract on small sizes: the Hydra
defaults (``domain/<name>.yaml``), the data module (batches, ``event_shape``, ``num_classes``,
``reference``), the network (output shape, finite values, gradients, the ``drop`` null
condition), one training loss, a few sampling steps, the artifacts (files exist, PNG / NPY /
PT parse, nothing half-written) and the metrics (plain floats). The first broken promise
raises :class:`DomainContractError` naming the domain and what to fix.
"""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .domain import REQUIRED_ATTRS, DomainData

__all__ = ["DomainContractError", "check_domain", "domain_defaults"]


class DomainContractError(AssertionError):
    """A domain breaks the contract of :mod:`omnidiff.domain`."""


def _fail(domain: Any, what: str) -> None:
    name = getattr(domain, "name", type(domain).__name__)
    raise DomainContractError(f"domain {name!r}: {what}")


def _require(cond: bool, domain: Any, what: str) -> None:
    if not cond:
        _fail(domain, what)


def _sp_root(sp: str):
    from importlib import resources

    if sp.startswith("pkg://"):
        return resources.files(sp[len("pkg://"):].replace("/", "."))
    return Path(sp[len("file://"):] if sp.startswith("file://") else sp)


def domain_defaults(domain: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, model)`` defaults from the domain's ``domain/<name>.yaml`` (``{}`` without)."""
    from omegaconf import OmegaConf

    sp = getattr(domain, "config_searchpath", None)
    if not sp:
        return {}, {}
    _require(isinstance(sp, str) and sp.startswith(("pkg://", "file://")), domain,
             f"config_searchpath must be None or a 'pkg://package.conf' / 'file://' path; "
             f"got {sp!r}")
    try:
        f = _sp_root(sp).joinpath("domain", f"{domain.name}.yaml")
        text = f.read_text(encoding="utf-8")
    except Exception as exc:
        _fail(domain, f"config_searchpath {sp!r} has no readable domain/{domain.name}.yaml "
                      f"({type(exc).__name__}: {exc}); ship it as package data")
    cfg = OmegaConf.to_container(OmegaConf.create(text), resolve=True) or {}
    _require("model" in cfg and "data" in cfg, domain,
             f"domain/{domain.name}.yaml must define both 'model:' and 'data:' "
             "(and start with '# @package _global_')")
    _require("@package _global_" in text, domain,
             f"domain/{domain.name}.yaml must start with '# @package _global_'")
    return dict(cfg["data"] or {}), dict(cfg["model"] or {})


def _check_file(domain: Any, path: Path) -> None:
    _require(path.is_file() and path.stat().st_size > 0, domain,
             f"save_artifacts returned {path}, which is missing or empty")
    suffix = path.suffix.lower()
    try:
        if suffix in (".png", ".gif", ".jpg", ".jpeg"):
            from PIL import Image
            with Image.open(path) as im:
                im.verify()
        elif suffix == ".npy":
            import numpy as np
            np.load(path, allow_pickle=False)
        elif suffix in (".pt", ".ckpt"):
            torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".wav":
            import soundfile
            soundfile.info(str(path))
    except Exception as exc:
        _fail(domain, f"artifact {path.name} does not parse ({type(exc).__name__}: {exc})")


def _perturbed(net: nn.Module, seed: int) -> nn.Module:
    """A copy with every parameter randomised (zero-initialised layers would hide the
    dependence of the output on the condition)."""
    net = copy.deepcopy(net).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.is_floating_point():
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))
    return net


def check_domain(domain: Any, *, data: Mapping[str, Any] | None = None,
                 model: Mapping[str, Any] | None = None, out_dir: str | Path | None = None,
                 n: int = 4, steps: int = 2, sampler: str = "ddim", seed: int = 0
                 ) -> dict[str, Any]:
    """Check ``domain`` against the contract of :mod:`omnidiff.domain`; return a short report.

    ``data`` / ``model`` are merged over the domain's own defaults (its
    ``domain/<name>.yaml``); pass small sizes to keep the check fast. ``out_dir`` receives the
    artifacts (a temporary folder when None). ``n`` samples are drawn with ``steps`` steps of
    ``sampler``. Raises :class:`DomainContractError` on the first broken promise.
    """
    from .losses import diffusion_loss
    from .model import DiffusionModel
    from .pipeline import generate_samples
    from .schedules import get_schedule

    # ---- the object -------------------------------------------------------------------------
    missing = [a for a in REQUIRED_ATTRS if not hasattr(domain, a)]
    _require(not missing, domain, f"lacks {', '.join(missing)} (see omnidiff.domain.Domain)")
    _require(isinstance(domain.name, str) and domain.name.isidentifier(), domain,
             f"name must be an identifier-like string; got {domain.name!r}")
    for meth in ("build_data", "build_network", "save_artifacts", "metrics"):
        _require(callable(getattr(domain, meth)), domain, f"{meth} must be callable")
    data_defaults, model_defaults = domain_defaults(domain)
    data_cfg = {**data_defaults, **dict(data or {})}
    model_cfg = {**model_defaults, **dict(model or {})}
    torch.manual_seed(seed)

    # ---- data -------------------------------------------------------------------------------
    dm = domain.build_data(**data_cfg)
    for hook in ("prepare_data", "setup"):
        if hasattr(dm, hook):
            getattr(dm, hook)(*(("fit",) if hook == "setup" else ()))
    _require(isinstance(dm, DomainData), domain,
             "build_data must return a data module with event_shape, num_classes, reference()")
    event_shape = tuple(dm.event_shape)
    _require(len(event_shape) >= 1 and all(isinstance(s, int) and s > 0 for s in event_shape),
             domain, f"event_shape must be a tuple of positive ints; got {dm.event_shape!r}")
    num_classes = dm.num_classes
    _require(isinstance(num_classes, int) and num_classes >= 0, domain,
             f"num_classes must be an int >= 0; got {num_classes!r}")
    _require(hasattr(dm, "train_dataloader"), domain, "the data module needs train_dataloader()")
    loader = dm.train_dataloader()
    _require(callable(getattr(loader, "state_dict", None))
             and callable(getattr(loader, "load_state_dict", None)), domain,
             "train_dataloader() must be resumable (state_dict / load_state_dict) so resume=auto "
             "continues at the same batch; build it with omnidiff.data.train_loader(dataset, "
             "batch_size, seed=...)")
    batch = next(iter(loader))
    _require(isinstance(batch, dict) and "x" in batch, domain,
             f"batches must be dicts with 'x' (and 'cond'); got {type(batch).__name__}")
    x = batch["x"]
    _require(isinstance(x, torch.Tensor) and x.is_floating_point()
             and tuple(x.shape[1:]) == event_shape and x.shape[0] >= 1, domain,
             f"batch['x'] must be a float tensor (B, *{event_shape}); got "
             f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    _require(bool(torch.isfinite(x).all()), domain, "batch['x'] holds NaN or inf")
    cond = None
    if num_classes > 0:
        cond = batch.get("cond")
        _require(isinstance(cond, torch.Tensor) and cond.dtype == torch.long
                 and tuple(cond.shape) == (x.shape[0],), domain,
                 f"with num_classes={num_classes}, batch['cond'] must be a long tensor "
                 f"({x.shape[0]},); got {getattr(cond, 'dtype', cond)} "
                 f"{tuple(getattr(cond, 'shape', ()))}")
        _require(bool(((cond >= 0) & (cond < num_classes)).all()), domain,
                 f"batch['cond'] labels must lie in [0, {num_classes})")
    n_ref = max(2 * n, 8)
    ref = dm.reference(n_ref, torch.Generator().manual_seed(seed))
    _require(isinstance(ref, tuple) and len(ref) == 2, domain,
             "reference(n, generator) must return a pair (samples, labels or None)")
    ref_x, ref_c = ref
    _require(isinstance(ref_x, torch.Tensor) and tuple(ref_x.shape) == (n_ref, *event_shape),
             domain, f"reference({n_ref}) must return samples ({n_ref}, *{event_shape}); got "
                     f"{tuple(getattr(ref_x, 'shape', ()))}")
    if num_classes > 0:
        _require(isinstance(ref_c, torch.Tensor) and tuple(ref_c.shape) == (n_ref,), domain,
                 f"reference labels must be ({n_ref},) for a conditional data module")
    again = dm.reference(n_ref, torch.Generator().manual_seed(seed))[0]
    _require(torch.equal(ref_x, again), domain,
             "reference(n, generator) must be deterministic for a given generator seed")

    # ---- network ----------------------------------------------------------------------------
    net = domain.build_network(event_shape, num_classes, **model_cfg)
    _require(isinstance(net, nn.Module), domain, "build_network must return an nn.Module")
    b = x.shape[0]
    t = torch.rand(b, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = net.eval()(x, t, cond, None)
    _require(isinstance(out, torch.Tensor) and out.shape == x.shape, domain,
             f"net(x_t, t, cond, drop) must return the shape of x_t {tuple(x.shape)}; got "
             f"{tuple(getattr(out, 'shape', ()))}")
    _require(bool(torch.isfinite(out).all()), domain, "the network output holds NaN or inf")
    probe = _perturbed(net, seed)
    with torch.no_grad():
        drop_all = torch.ones(b, dtype=torch.bool)
        if num_classes > 0:
            other = (cond + 1) % num_classes
            a = probe(x, t, cond, drop_all)
            c = probe(x, t, other, drop_all)
            _require(torch.allclose(a, c, atol=1e-5, rtol=1e-4), domain,
                     "where drop is True the network must ignore cond (use its null condition)")
            _require(torch.allclose(a, probe(x, t, None, None), atol=1e-5, rtol=1e-4), domain,
                     "cond=None must give the null condition, like drop=True")
            if num_classes > 1:
                keep = probe(x, t, cond, torch.zeros(b, dtype=torch.bool))
                _require(not torch.allclose(keep, probe(x, t, other, None)), domain,
                         "the network ignores cond (outputs do not change with the label)")
        else:
            a = probe(x, t, None, drop_all)
            _require(torch.allclose(a, probe(x, t, None, None), atol=1e-5, rtol=1e-4), domain,
                     "an unconditional network must accept drop and give the same output")

    # ---- one training loss ------------------------------------------------------------------
    schedule = get_schedule("cosine")
    dmodel = DiffusionModel(net.train(), schedule, "eps")
    loss, per_sample = diffusion_loss(dmodel, x, schedule=schedule, prediction="eps",
                                      cond=cond, p_uncond=0.5,
                                      generator=torch.Generator().manual_seed(seed))
    _require(loss.dim() == 0 and bool(torch.isfinite(loss)), domain,
             f"the diffusion loss must be a finite scalar; got {loss}")
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    _require(any(g is not None for g in grads), domain, "no parameter received a gradient")
    _require(all(g is None or bool(torch.isfinite(g).all()) for g in grads), domain,
             "gradients hold NaN or inf")
    net.zero_grad(set_to_none=True)

    # ---- sampling, artifacts, metrics -------------------------------------------------------
    dmodel.eval()
    samples, labels = generate_samples(dmodel, n, event_shape=event_shape,
                                       num_classes=num_classes, sampler=sampler, steps=steps,
                                       guidance=2.0 if num_classes else None, seed=seed,
                                       progress=False)
    _require(tuple(samples.shape) == (n, *event_shape) and bool(torch.isfinite(samples).all()),
             domain, f"sampling gave {tuple(samples.shape)} (expected ({n}, *{event_shape}), "
                     "finite)")
    with tempfile.TemporaryDirectory(prefix="omnidiff-contract-") as tmp:
        folder = Path(out_dir) if out_dir is not None else Path(tmp)
        files = domain.save_artifacts(samples, folder, cond=labels, prefix="contract")
        _require(isinstance(files, (list, tuple)) and len(files) > 0, domain,
                 "save_artifacts must return the list of written paths")
        files = [Path(f) for f in files]
        for f in files:
            _check_file(domain, f)
        leftovers = [p.name for p in folder.rglob("*") if ".tmp" in p.name]
        _require(not leftovers, domain, f"temporary files left behind: {leftovers} (write "
                                        "through omnidiff.io.atomic_path)")
        names = [f.name for f in files]

    metrics = domain.metrics(samples, ref_x, cond=labels, ref_cond=ref_c)
    _require(isinstance(metrics, Mapping) and len(metrics) > 0, domain,
             "metrics must return a non-empty dict {name: float}")
    for k, v in metrics.items():
        _require(isinstance(k, str) and isinstance(v, (float, int)) and not isinstance(v, bool),
                 domain, f"metric {k!r} must be a plain float; got {type(v).__name__}")
    half = n_ref // 2
    same = domain.metrics(ref_x[:half], ref_x[half:],
                          cond=None if ref_c is None else ref_c[:half],
                          ref_cond=None if ref_c is None else ref_c[half:])
    bad = [k for k, v in same.items() if not math.isfinite(float(v))]
    _require(not bad, domain, f"metrics of reference vs reference data are not finite: {bad}")
    return {"name": domain.name, "event_shape": event_shape, "num_classes": num_classes,
            "loss": float(loss.detach()), "files": names, "metrics": dict(metrics)}

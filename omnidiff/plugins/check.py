"""The domain contract as a reusable check: ``check_domain(domain)``.

A plugin author runs it in their own test suite (omnidiff runs it over every registered domain
in ``tests/test_domain_contract.py``)::

    from omnidiff.plugins.check import check_domain
    from my_plugin import MyDomain

    def test_contract(tmp_path):
        check_domain(MyDomain(), data={"train_size": 256}, model={"width": 16}, out_dir=tmp_path)

It exercises the whole :class:`~omnidiff.plugins.contract.Domain` contract on small sizes: the
Hydra defaults (``domain/<name>.yaml``), the data module (batches, ``event_shape``, the condition
specification ``cond_spec`` and batches that fit it, ``reference``, ``condition(x)`` where
defined), the network (output shape, finite values, gradients, the ``drop`` null condition, the
condition of any kind changes the output), one training loss, a few guided sampling steps with the
reference data's conditions, the artifacts (files exist, PNG / NPY / PT parse, nothing
half-written) and the metrics (plain floats). The first broken promise raises
:class:`DomainContractError` naming the domain and what to fix.
"""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from omnidiff.core.conditions import LabelCond, NamedCond, SequenceCond, cond_spec_of, index_cond
from omnidiff.core.losses import diffusion_loss
from omnidiff.core.model import DiffusionModel
from omnidiff.core.schedules import get_schedule
from omnidiff.errors import ConditionError, ConfigError, DataError, PluginError
from omnidiff.plugins.configs import domain_config_problem, searchpath_root
from omnidiff.plugins.contract import REQUIRED_ATTRS, DomainData, data_kwargs
from omnidiff.plugins.data import check_batch, prepare_data_module
from omnidiff.plugins.shards import ShardBatches, Shards, need_litdata, write_shards
from omnidiff.samplers.generate import generate_samples

__all__ = ["DomainContractError", "check_domain", "domain_defaults"]


class DomainContractError(PluginError, AssertionError):
    """A domain breaks the contract of :mod:`omnidiff.plugins.contract` (an assertion for pytest, a
    plugin error for the command line)."""


def _fail(domain: Any, what: str) -> None:
    name = getattr(domain, "name", type(domain).__name__)
    raise DomainContractError(f"domain {name!r}: {what}")


def _require(cond: bool, domain: Any, what: str) -> None:
    if not cond:
        _fail(domain, what)


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
        problem = domain_config_problem(domain)  # the file exists, with its package line
    except Exception as exc:  # a pkg:// package that does not import
        problem = f"config_searchpath {sp!r} cannot be read ({type(exc).__name__}: {exc})"
    _require(problem is None, domain, str(problem))
    text = searchpath_root(sp).joinpath("domain", f"{domain.name}.yaml").read_text(encoding="utf-8")
    cfg = OmegaConf.to_container(OmegaConf.create(text), resolve=True) or {}
    _require("model" in cfg and "data" in cfg, domain,
             f"domain/{domain.name}.yaml must define both 'model:' and 'data:'")
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


def _perturb(spec: Any, cond: Any) -> Any:
    """A different condition of the same kind (labels shifted by one, tensors moved, masks
    flipped), to see whether the network reads its condition."""
    if isinstance(spec, NamedCond):
        return {k: _perturb(s, cond[k]) for k, s in spec.fields}
    if isinstance(spec, LabelCond):
        return (cond + 1) % spec.num_classes
    if isinstance(spec, SequenceCond):  # another prompt of the same length
        seq = cond[spec.key]
        other = (seq + 1) % spec.vocab_size if spec.vocab_size else seq + 1.0 + seq.abs()
        return {**cond, spec.key: other}
    if cond.dtype == torch.bool:
        return ~cond
    if cond.is_floating_point():
        return cond + 1.0 + cond.abs()
    return cond + 1


def _check_object(domain: Any) -> None:
    missing = [a for a in REQUIRED_ATTRS if not hasattr(domain, a)]
    _require(not missing, domain,
             f"lacks {', '.join(missing)} (see omnidiff.plugins.contract.Domain)")
    _require(isinstance(domain.name, str) and domain.name.isidentifier(), domain,
             f"name must be an identifier-like string; got {domain.name!r}")
    for meth in ("build_data", "build_network", "save_artifacts", "metrics"):
        _require(callable(getattr(domain, meth)), domain, f"{meth} must be callable")


def _check_data(domain: Any, data_cfg: dict[str, Any]) -> tuple[Any, tuple[int, ...], Any]:
    """The data module, its event shape and its condition specification."""
    dm = prepare_data_module(domain.build_data(**data_cfg))
    _require(isinstance(dm, DomainData), domain,
             "build_data must return a data module with event_shape and reference()")
    event_shape = tuple(dm.event_shape)
    _require(len(event_shape) >= 1 and all(isinstance(s, int) and s > 0 for s in event_shape),
             domain, f"event_shape must be a tuple of positive ints; got {dm.event_shape!r}")
    try:
        spec = cond_spec_of(dm)
    except (TypeError, ValueError) as exc:
        _fail(domain, f"cond_spec must be an omnidiff.core.conditions.CondSpec (or num_classes an "
                      f"int >= 0): {exc}")
    return dm, event_shape, spec


def _check_batch(domain: Any, dm: Any, event_shape: tuple[int, ...], spec: Any
                 ) -> tuple[torch.Tensor, Any]:
    """One training batch: ``x: (B, *event)`` and its condition (None if unconditional)."""
    _require(hasattr(dm, "train_dataloader"), domain, "the data module needs train_dataloader()")
    loader = dm.train_dataloader()
    _require(callable(getattr(loader, "state_dict", None))
             and callable(getattr(loader, "load_state_dict", None)), domain,
             "train_dataloader() must be resumable (state_dict / load_state_dict) so resume=auto "
             "continues at the same batch; build it with "
             "omnidiff.plugins.data.train_loader(dataset, batch_size, seed=...)")
    batch = next(iter(loader))
    try:
        return check_batch(batch, event_shape, spec)
    except DataError as exc:
        _fail(domain, str(exc))


def _check_shards(domain: Any, dm: Any, event_shape: tuple[int, ...], spec: Any) -> str:
    """The training data written as shards (``omnidiff prepare``) and streamed back
    (``data.stream``): the streamed batch is a training batch of the same kind. Skipped
    without the optional litdata package."""
    try:
        need_litdata()
    except ConfigError:
        return "skipped (pip install litdata to check)"
    dataset = dm.train_dataloader().dataset
    with tempfile.TemporaryDirectory() as tmp:
        try:
            write_shards(dataset, Path(tmp) / "shards", {"domain": domain.name})
            batches = ShardBatches(Shards(Path(tmp) / "shards"), min(4, len(dataset)))
            batch = batches[(0, 0)]
        except DataError as exc:
            _fail(domain, f"its training dataset cannot be written as shards: {exc}")
    try:
        check_batch(batch, event_shape, spec)
    except DataError as exc:
        _fail(domain, f"a batch streamed from shards of its training dataset: {exc}")
    return "ok"


def _sample_shape(dm: Any, event_shape: tuple[int, ...]) -> tuple[int, ...]:
    """A sample's shape as data: the event's, or the data module's ``sample_shape`` where the
    event is a code of the data (latent diffusion)."""
    return tuple(getattr(dm, "sample_shape", None) or event_shape)


def _check_reference(domain: Any, dm: Any, n_ref: int, event_shape: tuple[int, ...], spec: Any,
                     seed: int) -> tuple[torch.Tensor, Any]:
    ref = dm.reference(n_ref, torch.Generator().manual_seed(seed))
    _require(isinstance(ref, tuple) and len(ref) == 2, domain,
             "reference(n, generator) must return a pair (samples, conditions or None)")
    ref_x, ref_c = ref
    shape = _sample_shape(dm, event_shape)
    _require(isinstance(ref_x, torch.Tensor) and tuple(ref_x.shape) == (n_ref, *shape),
             domain, f"reference({n_ref}) must return samples ({n_ref}, *{shape}); got "
                     f"{tuple(getattr(ref_x, 'shape', ()))}")
    if spec.conditional:
        try:
            spec.check_batch(ref_c, n_ref)
        except ConditionError as exc:
            _fail(domain, f"reference({n_ref}) conditions: {exc}")
    again = dm.reference(n_ref, torch.Generator().manual_seed(seed))[0]
    _require(torch.equal(ref_x, again), domain,
             "reference(n, generator) must be deterministic for a given generator seed")
    return ref_x, ref_c


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def _check_network(domain: Any, net: Any, x: torch.Tensor, cond: Any, spec: Any, seed: int
                   ) -> None:
    """Output shape and finiteness; ``drop`` and ``cond=None`` give the null condition; the
    condition matters otherwise (on a copy with every weight randomised, since zero-initialised
    layers would hide it)."""
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
    drop_all = torch.ones(b, dtype=torch.bool)
    with torch.no_grad():
        if not spec.conditional:
            _require(_close(probe(x, t, None, drop_all), probe(x, t, None, None)), domain,
                     "an unconditional network must accept drop and give the same output")
            return
        other = _perturb(spec, cond)
        a = probe(x, t, cond, drop_all)
        _require(_close(a, probe(x, t, other, drop_all)), domain,
                 "where drop is True the network must ignore cond (use its null condition)")
        _require(_close(a, probe(x, t, None, None)), domain,
                 "cond=None must give the null condition, like drop=True")
        if spec.num_classes != 1:
            keep = probe(x, t, cond, torch.zeros(b, dtype=torch.bool))
            _require(not torch.allclose(keep, probe(x, t, other, None)), domain,
                     "the network ignores cond (outputs do not change with the condition)")


def _check_precisions(domain: Any, net: nn.Module, x: torch.Tensor, cond: Any, seed: int
                      ) -> None:
    """The network runs in float64, bfloat16 and float16 (through :class:`DiffusionModel`,
    which casts inputs and floating conditions to the network's dtype) and agrees with its
    float32 self: to 1e-4 in float64, 10% (relative RMS) in half precision."""
    probe = _perturbed(net, seed)  # zero-initialised output layers would hide a mismatch
    t = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(seed + 3))
    with torch.no_grad():
        ref = DiffusionModel(probe, "cosine", "eps").eval()(x, t, cond)  # (B, *event)
        for dtype, tol in ((torch.float64, 1e-4), (torch.bfloat16, 0.1), (torch.float16, 0.1)):
            model = DiffusionModel(copy.deepcopy(probe).to(dtype), "cosine", "eps").eval()
            try:
                out = model(x, t, cond)
            except (RuntimeError, TypeError) as exc:
                _fail(domain, f"the network fails in {dtype} ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]}); compute in the dtype of "
                              "the weights (cast embeddings with .to(weight.dtype))")
            err = float((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-12))
            _require(out.dtype == x.dtype and bool(torch.isfinite(out).all()) and err < tol,
                     domain, f"in {dtype} the network's output differs from float32 by "
                     f"{err:.3g} (relative RMS; at most {tol:g})")


def _check_loss(domain: Any, net: nn.Module, x: torch.Tensor, cond: Any, seed: int
                ) -> tuple[Any, float]:
    """One diffusion loss and its gradients; returns the bound DiffusionModel and the loss."""
    schedule = get_schedule("cosine")
    dmodel = DiffusionModel(net.train(), schedule, "eps")
    loss, _ = diffusion_loss(dmodel, x, schedule=schedule, prediction="eps", cond=cond,
                             p_uncond=0.5, generator=torch.Generator().manual_seed(seed))
    _require(loss.dim() == 0 and bool(torch.isfinite(loss)), domain,
             f"the diffusion loss must be a finite scalar; got {loss}")
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    _require(any(g is not None for g in grads), domain, "no parameter received a gradient")
    _require(all(g is None or bool(torch.isfinite(g).all()) for g in grads), domain,
             "gradients hold NaN or inf")
    net.zero_grad(set_to_none=True)
    return dmodel.eval(), float(loss.detach())


def _check_sampling(domain: Any, dm: Any, dmodel: Any, n: int, event_shape: tuple[int, ...],
                    spec: Any, ref_c: Any, sampler: str, steps: int, seed: int
                    ) -> tuple[torch.Tensor, Any]:
    """``n`` samples with guidance, their conditions from the reference data."""
    cond = None if spec.drawable or not spec.conditional else index_cond(ref_c, slice(0, n))
    samples, used = generate_samples(
        dmodel, n, event_shape=event_shape, cond_spec=spec, cond=cond, sampler=sampler,
        steps=steps, guidance=2.0 if spec.conditional else None, seed=seed, progress=False,
        shape_for=getattr(dm, "event_shape_for", None), decode=getattr(domain, "decode", None))
    shape = _sample_shape(dm, event_shape)
    ok = samples.shape[0] == n and samples.dim() == len(shape) + 1 and (
        spec.variable_shape or tuple(samples.shape[1:]) == shape)
    _require(ok and bool(torch.isfinite(samples).all()), domain,
             f"sampling gave {tuple(samples.shape)} (expected ({n}, *{shape}), finite)")
    return samples, used


def _check_artifacts(domain: Any, dm: Any, samples: torch.Tensor, cond: Any,
                     out_dir: str | Path | None) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="omnidiff-contract-") as tmp:
        folder = Path(out_dir) if out_dir is not None else Path(tmp)
        files = domain.save_artifacts(samples, folder, cond=cond, prefix="contract",
                                      **data_kwargs(domain.save_artifacts, dm))
        _require(isinstance(files, (list, tuple)) and len(files) > 0, domain,
                 "save_artifacts must return the list of written paths")
        files = [Path(f) for f in files]
        for f in files:
            _check_file(domain, f)
        leftovers = [p.name for p in folder.rglob("*") if ".tmp" in p.name]
        _require(not leftovers, domain, f"temporary files left behind: {leftovers} (write "
                                        "through omnidiff.io.atomic_path)")
        return [f.name for f in files]


def _check_metrics(domain: Any, dm: Any, samples: torch.Tensor, cond: Any, ref_x: torch.Tensor,
                   ref_c: Any) -> dict[str, float]:
    extra = data_kwargs(domain.metrics, dm)
    metrics = domain.metrics(samples, ref_x, cond=cond, ref_cond=ref_c, **extra)
    _require(isinstance(metrics, Mapping) and len(metrics) > 0, domain,
             "metrics must return a non-empty dict {name: float}")
    for k, v in metrics.items():
        _require(isinstance(k, str) and isinstance(v, (float, int)) and not isinstance(v, bool),
                 domain, f"metric {k!r} must be a plain float; got {type(v).__name__}")
    half = ref_x.shape[0] // 2
    same = domain.metrics(ref_x[:half], ref_x[half:], cond=index_cond(ref_c, slice(0, half)),
                          ref_cond=index_cond(ref_c, slice(half, None)), **extra)
    bad = [k for k, v in same.items() if not math.isfinite(float(v))]
    _require(not bad, domain, f"metrics of reference vs reference data are not finite: {bad}")
    return dict(metrics)


def _check_condition_map(domain: Any, dm: Any, ref_x: torch.Tensor, ref_c: Any, spec: Any
                         ) -> None:
    """A domain that computes its condition from data: ``condition(x)`` fits the spec."""
    fn = getattr(dm, "condition", None)
    if fn is None or not spec.conditional:
        return
    try:
        c = fn(ref_x[:2])
    except (ValueError, TypeError):
        return  # this configuration's condition is not computed from data (said in one line)
    try:
        spec.check_batch(c, 2)
    except ConditionError as exc:
        _fail(domain, f"condition(x) must return a condition of the spec: {exc}")


def check_domain(domain: Any, *, data: Mapping[str, Any] | None = None,
                 model: Mapping[str, Any] | None = None, out_dir: str | Path | None = None,
                 n: int = 4, steps: int = 2, sampler: str = "ddim", seed: int = 0
                 ) -> dict[str, Any]:
    """Check ``domain`` against the contract of :mod:`omnidiff.plugins.contract`; return a short
    report.

    ``data`` / ``model`` are merged over the domain's own defaults (its
    ``domain/<name>.yaml``); pass small sizes to keep the check fast. ``out_dir`` receives the
    artifacts (a temporary folder when None). ``n`` samples are drawn with ``steps`` steps of
    ``sampler``, conditioned like the reference data. Raises :class:`DomainContractError` on
    the first broken promise.
    """
    _check_object(domain)
    data_defaults, model_defaults = domain_defaults(domain)
    data_cfg = {**data_defaults, **dict(data or {})}
    model_cfg = {**model_defaults, **dict(model or {})}
    torch.manual_seed(seed)

    dm, event_shape, spec = _check_data(domain, data_cfg)
    x, cond = _check_batch(domain, dm, event_shape, spec)
    shards = _check_shards(domain, dm, event_shape, spec)
    ref_x, ref_c = _check_reference(domain, dm, max(2 * n, 8), event_shape, spec, seed)
    _check_condition_map(domain, dm, ref_x, ref_c, spec)
    net = domain.build_network(event_shape, spec, **model_cfg)
    _check_network(domain, net, x, cond, spec, seed)
    _check_precisions(domain, net, x, cond, seed)
    dmodel, loss = _check_loss(domain, net, x, cond, seed)
    samples, used = _check_sampling(domain, dm, dmodel, n, event_shape, spec, ref_c, sampler,
                                    steps, seed)
    names = _check_artifacts(domain, dm, samples, used, out_dir)
    metrics = _check_metrics(domain, dm, samples, used, ref_x, ref_c)
    return {"name": domain.name, "event_shape": event_shape, "cond": spec.describe(),
            "num_classes": spec.num_classes, "loss": loss, "files": names,
            "metrics": metrics, "shards": shards}

"""The domain plugin interface.

A *domain* is everything modality-specific: a network, a data module, an artifact writer and
quality metrics. The core never imports a domain; domains are found through the entry-point
group ``omnidiff.domains`` (see :mod:`omnidiff.plugins.registry`) and use only omnidiff's public
API.

Contract (checked by ``omnidiff.plugins.check.check_domain`` over every registered domain):

* ``name``: the registry name (the entry-point name).
* ``config_searchpath``: a Hydra search-path entry (``"pkg://package.conf"``) holding
  ``domain/<name>.yaml`` (the domain's defaults for ``model`` and ``data``) and, optionally,
  ``recipe/*.yaml`` recipes that ship with the domain. ``None`` when the domain has no configs.
* ``build_data(**data_cfg)`` returns a :class:`DomainData` (a ``LightningDataModule``) whose
  batches are dicts ``{"x": (B, *event), "cond": ...}`` (``"cond"`` only for a conditional
  model) and which exposes ``event_shape``, ``cond_spec`` (a
  :class:`~omnidiff.core.conditions.CondSpec`: none, labels, a tensor per sample, or a named set;
  data modules that only have ``num_classes`` are read as labels) and
  ``reference(n, generator)`` (held-out samples and their conditions, for metrics). Optional:
  ``condition(x)`` (data -> its condition, where the condition is computed from data),
  ``event_shape_for(cond)`` (the event shape a batched condition fixes, e.g. a vocoder's
  ``hop * frames``) and ``read_condition(path)`` (a domain file format -> a condition).
* ``build_network(event_shape, cond_spec, **model_cfg)`` returns an ``nn.Module`` called as
  ``net(x_t, t, cond=None, drop=None) -> (B, *event)``: ``x_t: (B, *event)`` already scaled to
  unit variance by the core, ``t: (B,)`` continuous time in [0, 1], ``cond`` a batched
  condition of the specification (``(B,)`` long labels, a ``(B, *shape)`` tensor, or a dict of
  them) or ``None``, ``drop: (B,) bool`` or ``None`` — where ``drop`` is True, and when
  ``cond`` is None, the network must use its own null condition (classifier-free guidance).
* ``save_artifacts(samples, out_dir, cond=None, prefix="samples") -> list[Path]`` writes files
  people look at (PNG / WAV / GIF) plus raw tensors, atomically.
* ``metrics(samples, reference, cond=None, ref_cond=None) -> dict[str, float]``: lower is better
  unless the name says otherwise (``*_acc``, ``coverage``...).
* Both may also take a keyword ``data``: the core then passes the data module the samples came
  from (a sample rate, class names, spectrogram settings: facts of the data that a file writer
  or a metric needs). Callers use :func:`data_kwargs`, so plugins without it keep working.
* Optional, for a domain whose event is a code of its data (latent diffusion,
  :class:`~omnidiff.methods.latent.domain.LatentDomain`): ``decode(z) -> x`` and ``sample_shape``
  (a sample's shape as data). The core then decodes samples before ``save_artifacts`` and
  ``metrics`` (``Pipeline.generate`` returns data), the data module's ``reference`` returns data of
  ``sample_shape`` (it may say so itself, as ``sample_shape``), and ``encode(x) -> z`` maps data
  into the event space (likelihoods).
* Optional: ``main_metric``, the metric name (or names to try in order) that sweeps and
  ``omnidiff compare`` plot and mark (:mod:`omnidiff.tasks.compare`). The files ``save_artifacts``
  returns are what ``logger=tensorboard`` shows (:mod:`omnidiff.training.tensorboard`): ``.png``,
  ``.wav`` and ``.gif`` need nothing more from a domain.
* Optional: ``aux_loss(name, data) -> fn``, the domain's auxiliary losses on the denoised
  estimate (``loss.aux=NAME``): ``fn(x0_hat, x0, cond) -> (B,)`` on data, built for the data
  config ``data`` (a sample rate). :class:`LazyDomain` reads them from ``aux_losses``.
* Optional on the network: ``prior_scale(cond) -> (B, *event)``, a data-dependent Gaussian
  prior (:class:`~omnidiff.core.model.DiffusionModel`); optional on the data module:
  ``model_settings(model_cfg) -> dict``, model options that follow from the data (a prior's
  calibration), filled in where the model config leaves them null.
* Optional on the data module: ``channel_axis`` (default 0), where the channels are in
  ``event_shape`` (a clip ``(T, C, H, W)``: 1), for the autoencoder of latent diffusion.
* Optional on the data module: ``duration(x) -> float`` (seconds of a batch of samples, for
  signals in time): evaluations then report ``rtf``, the real-time factor of sampling;
  ``pipeline_attrs``: names of data-module attributes that
  :class:`~omnidiff.inference.pipeline.Pipeline` exposes as its own (``pipe.sample_rate``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from omnidiff.core.conditions import as_cond_spec
from omnidiff.errors import ConfigError

__all__ = ["Domain", "DomainData", "LazyDomain", "REQUIRED_ATTRS", "data_kwargs",
           "main_metric_names", "takes_data_module", "takes_keyword", "lazy_exports"]

REQUIRED_ATTRS = ("name", "config_searchpath", "build_data", "build_network", "save_artifacts",
                  "metrics")


@runtime_checkable
class DomainData(Protocol):
    """What a domain's data module exposes besides the LightningDataModule hooks."""

    event_shape: tuple[int, ...]

    def reference(self, n: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, Any]:
        """Held-out samples ``(n, *event)`` and their conditions (batched; None when
        unconditional)."""
        ...


@runtime_checkable
class Domain(Protocol):
    """A modality plugged into omnidiff's core (see the module docstring for the contract)."""

    name: str
    config_searchpath: str | None

    def build_data(self, **data_cfg: Any) -> DomainData: ...

    def build_network(self, event_shape: tuple[int, ...], cond_spec: Any,
                      **model_cfg: Any) -> nn.Module: ...

    def save_artifacts(self, samples: torch.Tensor, out_dir: str | Path,
                       cond: torch.Tensor | None = None, prefix: str = "samples") -> list[Path]: ...

    def metrics(self, samples: torch.Tensor, reference: torch.Tensor,
                cond: torch.Tensor | None = None,
                ref_cond: torch.Tensor | None = None) -> dict[str, float]: ...


def data_kwargs(fn: Any, data: Any) -> dict[str, Any]:
    """``{"data": data}`` when ``fn`` takes a ``data`` keyword (or ``**kwargs``), else ``{}``."""
    if data is None:
        return {}
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    ok = any(p.name == "data" or p.kind is p.VAR_KEYWORD for p in params)
    return {"data": data} if ok else {}


def main_metric_names(domain: Any) -> list[str]:
    """A domain's optional ``main_metric`` as a list of names to try in order (empty: none)."""
    pref = getattr(domain, "main_metric", None)
    return [pref] if isinstance(pref, str) else list(pref or [])


def takes_keyword(domain: Any, method: str, name: str) -> bool:
    """Whether the domain's ``method`` takes the keyword ``name`` (or ``**kwargs``); a
    :class:`LazyDomain` answers for the function behind the method."""
    part = getattr(domain, "part_for", None)
    fn = part(method) if part is not None else getattr(domain, method)
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def takes_data_module(domain: Any, method: str) -> bool:
    """Whether the domain's ``method`` (``save_artifacts``, ``metrics``) reads the data module,
    so that callers build it only then (a data module may need Lightning; inference does
    not)."""
    return takes_keyword(domain, method, "data")


def _resolve(spec: str, package: str) -> Any:
    """``".module:attr"`` (relative to ``package``) or ``"pkg.module:attr"`` -> the object."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module, package=package), attr)


def lazy_exports(package: str, names: dict[str, str]) -> Any:
    """A module-level ``__getattr__`` for a domain package that imports its public classes on
    first use (``names``: ``{"AudioData": ".data:AudioData"}``), so that importing the package
    (listing domains) stays light::

        __getattr__ = lazy_exports(__name__, {"AudioData": ".data:AudioData"})
    """
    def __getattr__(name: str) -> Any:
        if name in names:
            return _resolve(names[name], package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


class LazyDomain:
    """A :class:`Domain` whose parts live in submodules imported on first use, so that listing
    domains (``omnidiff domains``) never imports Lightning, timm or matplotlib.

    A subclass sets ``name``, ``config_searchpath`` and four ``"module:attr"`` specs, relative
    to the package of the class that sets them when they start with a dot (so a subclass of a
    plugin's domain, defined in another package, keeps the plugin's parts)::

        class PointsDomain(LazyDomain):
            name = "points"
            config_searchpath = "pkg://omnidiff_domains.points.conf"
            data_factory = ".data:PointsData"                # (**data_cfg)
            network_factory = ".networks:build_network"      # (event_shape, cond_spec, **cfg)
            artifact_writer = ".artifacts:save_artifacts"    # (samples, out_dir, cond=, prefix=)
            metrics_fn = ".metrics:compute_metrics"          # (samples, ref, cond=, ref_cond=)
    """

    name: str = ""
    config_searchpath: str | None = None
    # optional: sampler options this domain's samples should get unless the caller says
    # otherwise (read with getattr, so a plugin without it is fine), e.g. {"clip_x0": 1.0}
    sample_defaults: dict[str, Any] = {}
    # optional: the metric `omnidiff compare` and sweeps plot and mark, or names to try in
    # order (the first that a run reports); without it, the first metric
    main_metric: str | tuple[str, ...] | None = None
    # optional: auxiliary losses on the denoised estimate, name -> "module:factory" with
    # factory(data_cfg) -> fn(x0_hat, x0, cond) -> (B,) (``loss.aux=NAME``)
    aux_losses: dict[str, str] = {}
    data_factory: str = ""
    network_factory: str = ""
    artifact_writer: str = ""
    metrics_fn: str = ""

    def _part(self, attr: str) -> Any:
        """The object a spec attribute (``data_factory``, ...) names. A relative spec is
        resolved against the package of the class that set it, so a subclass defined
        elsewhere keeps its parent's parts."""
        return _resolve(getattr(self, attr), self._package_of(attr))

    def _package_of(self, attr: str) -> str:
        """The package that relative specs of ``attr`` are resolved against: that of the class
        that set ``attr``."""
        owner = next(c for c in type(self).__mro__ if attr in vars(c))
        module = sys.modules[owner.__module__]
        package = module.__name__ if hasattr(module, "__path__") else module.__package__
        return package or owner.__module__

    def part_for(self, method: str) -> Any:
        """The function behind ``save_artifacts`` or ``metrics``."""
        return self._part({"save_artifacts": "artifact_writer", "metrics": "metrics_fn"}[method])

    def build_data(self, **data_cfg: Any) -> DomainData:
        return self._part("data_factory")(**data_cfg)

    def build_network(self, event_shape: tuple[int, ...], cond_spec: Any,
                      **model_cfg: Any) -> nn.Module:
        return self._part("network_factory")(tuple(event_shape), as_cond_spec(cond_spec),
                                                **model_cfg)

    def save_artifacts(self, samples: torch.Tensor, out_dir: str | Path,
                       cond: torch.Tensor | None = None, prefix: str = "samples",
                       data: Any = None, **extra: Any) -> list[Path]:
        """The writer's files; ``extra`` keywords (``captions``) go to a writer that takes
        them (:func:`takes_keyword`)."""
        fn = self._part("artifact_writer")
        return fn(samples, out_dir, cond=cond, prefix=prefix, **data_kwargs(fn, data), **extra)

    def metrics(self, samples: torch.Tensor, reference: torch.Tensor,
                cond: torch.Tensor | None = None,
                ref_cond: torch.Tensor | None = None, data: Any = None) -> dict[str, float]:
        fn = self._part("metrics_fn")
        return fn(samples, reference, cond=cond, ref_cond=ref_cond, **data_kwargs(fn, data))

    def aux_loss(self, name: str, data: dict[str, Any] | None = None) -> Any:
        """The auxiliary loss ``name`` of ``aux_losses`` built for the data config ``data``;
        one line naming the choices for another name."""
        if name not in self.aux_losses:
            choices = ", ".join(self.aux_losses) or "none"
            raise ConfigError(f"loss.aux={name!r} is not an auxiliary loss of the {self.name} "
                              f"domain; choose from: {choices}")
        factory = _resolve(self.aux_losses[name], self._package_of("aux_losses"))
        return factory(dict(data or {}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

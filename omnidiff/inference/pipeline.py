"""One inference API for every domain: ``omnidiff.load(checkpoint).generate(n)``.

>>> pipe = omnidiff.load("runs/points2d/.../model.pt")       # or a Lightning .ckpt
>>> x = pipe.generate(1000, sampler="dpmpp_2m", steps=20, seed=0)   # (1000, *event)
>>> pipe.save(x, "out/")                                      # the domain's PNG / WAV / ...
>>> pipe.metrics(x)                                           # vs. the domain's reference data
>>> pipe.generate(prompt=["a 3 on the left", "left: 7, right: 1"], n=8, guidance=3)  # text
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from omnidiff.core.conditions import (
    CondSpec,
    LabelCond,
    class_names,
    index_cond,
    map_cond,
    sequence_field,
)
from omnidiff.core.guidance import classifier_free, conditional
from omnidiff.core.model import DiffusionModel
from omnidiff.errors import CheckpointError, ConditionError, PipelineError, UserError
from omnidiff.inference.condition_files import read_condition_file
from omnidiff.methods.classifier import NoisyClassifier, load_classifier
from omnidiff.methods.consistency import ConsistencyModel, choose_times, level_candidates
from omnidiff.methods.diffusers.scheduler import diffusers_times
from omnidiff.methods.distill_options import DISTILL_DEFAULTS
from omnidiff.methods.latent.autoencoder import read_autoencoder
from omnidiff.model_file import read_checkpoint
from omnidiff.model_spec import ModelSpec
from omnidiff.plugins.contract import (
    data_kwargs,
    main_metric_names,
    takes_data_module,
    takes_keyword,
)
from omnidiff.plugins.data import prepare_data_module
from omnidiff.samplers import DEFAULT_STEPS, default_grid
from omnidiff.samplers.calibrate import calibrate_grid, grid_key, stored_grid
from omnidiff.samplers.generate import (
    auto_batch,
    check_cond,
    check_request,
    compose_pairs,
    device_dtype,
    generate_samples,
    noise_and_cond,
    sampler_options,
)
from omnidiff.samplers.grids import timesteps
from omnidiff.samplers.likelihood import LogLikelihood, log_likelihood
from omnidiff.samplers.sampling import resolve_grid
from omnidiff.text.prompts import PromptEncoder, check_prompts
from omnidiff.threads import use_threads

__all__ = ["Pipeline", "load", "PipelineError", "check_device"]


# calibration noise is drawn from its own seed, apart from generate()'s default seed 0
CALIBRATION_SEED = 1_000_003


def _explicit(grid: Any) -> bool:
    """Whether ``grid`` is explicit times (not None and not a grid name)."""
    return grid is not None and not isinstance(grid, str)


class Pipeline:
    """A trained model ready for sampling, with its domain's artifact writer and metrics."""

    def __init__(self, model: DiffusionModel, spec: ModelSpec, *, domain: Any = None,
                 info: dict[str, Any] | None = None):
        self.model = model.eval()
        self.spec = spec
        self.domain = spec.build_domain() if domain is None else domain
        # a sample's shape as data: the event's, unless the domain decodes (latent diffusion)
        self.sample_shape = tuple(getattr(self.domain, "sample_shape", None)
                                  or spec.event_shape)
        self.decode = getattr(self.domain, "decode", None)
        self.info = dict(info or {})
        self.last_cond: Any = None
        self.last_grid: str | None = None
        self.last_sampler: str | None = None
        self.last_stats: dict[str, Any] = {}  # steps, nfe, network_evals of the last generate
        self.last_prompts: list[str] | None = None  # the prompt of each sample, when given
        self.last_mask: Any = None  # generate's mask= (imputation), if any
        self._prompt_encoder: PromptEncoder | None = None
        self._last_samples: torch.Tensor | None = None
        self._reference: tuple[int, Any] | None = None
        self._data: Any = None
        self._data_ready = False

    @property
    def domain_name(self) -> str:
        return self.spec.domain

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.spec.event_shape

    @property
    def cond_spec(self) -> CondSpec:
        return self.spec.cond

    @property
    def data_cfg(self) -> dict[str, Any]:
        """The training data's config (reference samples and metrics are drawn from it)."""
        return self.spec.data

    @property
    def num_classes(self) -> int:
        """The class count of a label-conditional model (0 otherwise)."""
        return self.cond_spec.num_classes

    @property
    def class_names(self) -> list[str]:
        """The names of its classes, label by label (the training data's, e.g. its
        sub-folders); ``generate(cond="name")`` takes them. Empty when it has none."""
        return class_names(self.cond_spec)

    def __getattr__(self, name: str) -> Any:
        """Facts the data module exports (its ``pipeline_attrs``), e.g. ``pipe.sample_rate``."""
        if name.startswith("_") or "domain" not in self.__dict__:
            raise AttributeError(name)
        data = self.data()
        if name in getattr(data, "pipeline_attrs", ()):
            return getattr(data, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: torch.device | str) -> "Pipeline":
        self.model.to(device)
        if getattr(self.domain, "autoencoder", None) is not None:
            self.domain.autoencoder.to(device)
        return self

    def __repr__(self) -> str:
        return (f"Pipeline(domain={self.domain_name!r}, event_shape={self.event_shape}, "
                f"cond={self.cond_spec.describe()!r}, schedule={self.model.schedule!r}, "
                f"prediction={self.model.prediction!r})")

    # ---- the data module: conditions from data, shapes from conditions --------------------
    def data(self, setup: bool = False) -> Any:
        """The domain's data module for the training data's config (built once, on demand)."""
        if self._data is None:
            self._data = self.domain.build_data(**self.data_cfg)
        if setup and not self._data_ready:
            prepare_data_module(self._data)
            self._data_ready = True
        return self._data

    def _shape_for(self, cond: Any) -> Sequence[int]:
        fn = getattr(self.data(), "event_shape_for", None)
        return self.event_shape if fn is None else fn(cond)

    def condition(self, x: torch.Tensor) -> Any:
        """The condition of data ``x: (n, *event)`` (a mel spectrogram of a waveform, the first
        frames of a clip, ...), for domains whose condition is computed from data:
        ``pipe.generate(cond=pipe.condition(x))`` round-trips real data."""
        if not self.cond_spec.conditional:
            raise PipelineError("this model is unconditional: it has no condition to compute")
        fn = getattr(self.data(), "condition", None)
        if fn is None:
            raise PipelineError(f"the {self.domain_name!r} domain does not compute its "
                                f"condition ({self.cond_spec.describe()}) from data; pass "
                                "cond= directly")
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise PipelineError(f"condition(x) takes a batch of data (n, *event); got "
                                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}")
        return fn(x)

    def read_condition(self, path: str | Path) -> Any:
        """A condition from a file: ``.npy`` / ``.pt`` holding a condition, or data of this
        model's kind (turned into its condition by :meth:`condition`); other formats (``.wav``,
        ``.png``, ...) where the domain's data module reads them (``read_condition``)."""
        return read_condition_file(self, Path(path))

    # ---- sampling -------------------------------------------------------------------------
    @property
    def default_sampler(self) -> dict[str, Any]:
        """``{"name", "steps"[, "grid"]}`` used when ``generate`` gets no sampler: dpmpp_2m at
        20 steps, or what a distilled student's model.pt names (consistency at 2 steps; euler
        at 2 on the trailing grid after reflow); its grid also applies when that sampler is
        named without a grid."""
        return dict(self.info.get("sampler") or {"name": "dpmpp_2m", "steps": DEFAULT_STEPS})

    def generate(self, n: int | None = None, *, sampler: str | None = None,
                 steps: int | None = None, guidance: float | None = None, cond: Any = None,
                 seed: int | None = None, batch_size: int | None = None,
                 progress: bool | str | None = None, callback: Any = None,
                 prompt: str | Sequence[str] | None = None,
                 negative_prompt: str | Sequence[str] | None = None,
                 compose: Sequence[tuple[Any, float]] | None = None,
                 guide_model: "Pipeline | str | Path | None" = None,
                 classifier: Any = None, label: Any = None, classifier_scale: float = 1.0,
                 noise: torch.Tensor | None = None, **options: Any) -> torch.Tensor:
        """Samples ``(n, *event)`` on CPU.

        ``noise``: the starting noise, standard normal ``(n, *event)`` (n follows from it),
        instead of noise drawn from ``seed``: the same noise through two samplers, two models
        or two libraries (with ``grid="diffusers"`` on a model loaded from a diffusers folder:
        the timesteps its scheduler would use) gives results to compare side by side.

        ``prompt``: a text or a list of texts for a model with a sequence condition; ``n``
        samples per prompt (default 1), in the order of the prompts. The same as ``cond=`` with
        the texts (``{"text": [...]}`` for a named set; other fields such as labels go in
        ``cond`` beside ``prompt``). ``negative_prompt`` (one, or one per sample) takes the null
        prompt's place under guidance. Each distinct prompt is encoded once, not per step.

        ``compose``: ``(prompt, weight)`` pairs whose pushes add to guidance's (composable
        diffusion, Liu et al. 2022): ``u + guidance (c - u) + sum weight_i (c_i - u)``, one more
        network half per pair. A pair's prompt is one text, or one per prompt (or per
        sample); typically the words of the prompt that name the attribute the samples miss,
        e.g. ``generate(prompt=["a 7 moving left", "a 3 moving up"], guidance=2,
        compose=[(["a 7", "a 3"], 5.0)])``. For a model without prompts the pairs hold
        conditions of its kind (labels, tensors).

        ``cond``: a condition of the model's kind (:attr:`cond_spec`): an int, list or long
        tensor of labels; a tensor of the specified per-sample shape, one ``(*shape)`` or a
        batch ``(n, *shape)``; or a dict of these for a named set. ``n`` may be left out when
        ``cond`` fixes it; a condition that fixes the sample's shape (a vocoder's mel) sets
        the shape of the noise. ``guidance``: classifier-free guidance scale (one batched call
        per step). ``sampler`` / ``steps``: :attr:`default_sampler` (dpmpp_2m at 20 steps;
        a distilled student's own, e.g. consistency at 2) unless given or an explicit ``grid``
        fixes the steps; the sampler used is in :attr:`last_sampler`. ``options`` go to the
        sampler: ``grid=``, ``clip_x0=`` (e.g. 1.0 for images in [-1, 1]), ``eta=``,
        ``order=``, ... (see :func:`omnidiff.samplers.sample`), over the domain's
        ``sample_defaults`` (the image domain clips x0 to [-1, 1]).

        ``progress``: a bar over the steps of every batch (True, or the bar's label; None:
        when there are more than 4 batches). ``callback(info)`` is called after every step
        with a :class:`~omnidiff.samplers.watch.SamplingStep`: ``info.step`` of
        ``info.steps``, the time ``info.t``, the current clean estimate ``info.x0`` and
        ``info.batch``; to watch a run (e.g. save ``info.x0`` as pictures) or stop it (raise).

        Grids: a grid calibrated for this sampler, its options and steps (``omnidiff
        calibrate``, :meth:`calibrate`) is used by default; ``grid="calibrated"`` insists on
        one, a grid name or explicit times override it. The grid used is in :attr:`last_grid`.

        For a label-conditional model without ``cond`` the labels are drawn uniformly (with
        ``seed``); the conditions used are kept in :attr:`last_cond` for :meth:`save` and
        :meth:`metrics`.

        Control, with no retraining (:func:`omnidiff.samplers.sample` has the details):
        ``known=x, mask=m`` fills in what ``m`` (True where known) hides, keeping ``x``
        exactly where it is set (inpainting, a gap in a waveform, in-between frames);
        ``method=`` ``tds`` (default) | ``smc`` | ``replace`` | ``repaint`` | ``dps``, or
        a dict with its options. ``init=x, strength=s`` edits ``x`` (SDEdit; with another
        label or prompt, translation). ``guide=fn, guide_scale=`` guides by ``fn(x0_hat) ->
        (B,)`` log-score. ``guide_model=`` (a Pipeline or a ``model.pt`` path: a weaker
        version of this model, e.g. an early checkpoint) makes ``guidance`` autoguidance, also
        for unconditional models. ``classifier=`` (the ``model.pt`` of ``omnidiff train
        stage=classifier`` on this domain and schedule, or a loaded :class:`NoisyClassifier`)
        guides towards ``label=`` (one, or one per sample; n follows from a list) at
        ``classifier_scale``.
        """
        sampler, steps, options = self._sampler_choice(
            sampler, steps, sampler_options(self.domain, options))
        cond, uncond, n, prompts = self._prompted(cond, n, prompt, negative_prompt, guidance)
        clf = self._classifier(classifier)
        if clf is not None and n is None and cond is None and isinstance(label, (list, tuple)):
            n = len(label)
        parts = self._parts(compose, cond, n, prompt)
        n = self._check_noise(noise, n, cond)
        options["grid"], self.last_grid = self._grid(sampler, steps, options)
        steps = None if _explicit(options["grid"]) else steps
        self.last_sampler, self.last_stats = sampler, {}
        x, used = generate_samples(self.model, n, event_shape=self.event_shape,
                                   cond_spec=self.cond_spec, sampler=sampler, steps=steps,
                                   guidance=guidance, cond=cond, seed=seed,
                                   batch_size=batch_size, device=self.device,
                                   progress=progress, callback=callback,
                                   shape_for=self._shape_for,
                                   decode=self.decode, stats=self.last_stats, uncond=uncond,
                                   compose=parts, guide_model=self._guide_model(guide_model),
                                   classifier=clf, classifier_labels=label,
                                   classifier_scale=classifier_scale, noise=noise, **options)
        self.last_cond, self._last_samples, self.last_prompts = used, x, prompts
        self.last_mask = options.get("mask")  # save() broadcasts it to the samples
        return x

    def _check_noise(self, noise: Any, n: int | None, cond: Any) -> int | None:
        """``n`` as ``noise`` fixes it; one line when the noise is not ``(n, *event)``."""
        if noise is None:
            return n
        if not isinstance(noise, torch.Tensor) or not noise.is_floating_point():
            raise PipelineError(f"noise= must be a float tensor (n, *event), got "
                                f"{type(noise).__name__}")
        event = tuple(self._shape_for(cond) if cond is not None and
                      self.cond_spec.variable_shape else self.event_shape)
        if noise.dim() != len(event) + 1 or tuple(noise.shape[1:]) != event \
                or n not in (None, noise.shape[0]):
            want = ", ".join(map(str, event))
            raise PipelineError(f"noise= must have shape ({n or 'n'}, {want}) for this model, "
                                f"got {tuple(noise.shape)}")
        return int(noise.shape[0])

    def _classifier(self, clf: Any) -> NoisyClassifier | None:
        """The guiding classifier, on this device, checked to read this model's samples: its
        domain, sample shape and schedule (one line naming what differs)."""
        if clf is None:
            return None
        if not isinstance(clf, NoisyClassifier):
            clf, payload = load_classifier(clf)
            pairs = {"domain": (self.domain_name, payload["domain"]),
                     "sample shape": (list(self.event_shape), list(payload["event_shape"]))}
            for what, (a, b) in pairs.items():
                if a != b:
                    raise PipelineError(f"classifier= was trained on another {what} ({b}; "
                                        f"this model: {a}); train one with `omnidiff train "
                                        f"stage=classifier` on this model's recipe")
        if clf.schedule.config() != self.model.schedule.config():
            raise PipelineError("classifier= was trained on noisy samples of another schedule "
                                f"({clf.schedule.config()}; this model: "
                                f"{self.model.schedule.config()}); train it with this "
                                "model's schedule=")
        return clf.to(self.device)

    def _guide_model(self, other: "Pipeline | str | Path | None") -> DiffusionModel | None:
        """The guiding model of autoguidance, on this device, checked to share this model's
        domain, shape, condition, schedule and prediction (one line naming what differs)."""
        if other is None:
            return None
        if not isinstance(other, Pipeline):
            other = load(other, device=self.device)
        ours, theirs = self.model, other.model
        pairs = {"domain": (self.domain_name, other.domain_name),
                 "sample shape": (self.event_shape, other.event_shape),
                 "condition": (self.cond_spec.describe(), other.cond_spec.describe()),
                 "schedule": (ours.schedule.config(), theirs.schedule.config()),
                 "prediction": (ours.prediction, theirs.prediction)}
        for what, (a, b) in pairs.items():
            if a != b:
                raise PipelineError(f"guide_model= must be a weaker version of this model; "
                                    f"its {what} differs ({b} vs {a})")
        return theirs.to(self.device).eval()

    # ---- prompts: texts -> the sequence condition ------------------------------------------
    def encode_prompts(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Texts -> this model's sequence condition value (token ids or a frozen encoder's
        embeddings, with masks), by the text encoder stored with the model."""
        seq = self._sequence_spec()
        try:
            if self._prompt_encoder is None:
                self._prompt_encoder = PromptEncoder(seq, device=self.device)
            return self._prompt_encoder(texts)
        except (ConditionError, UserError) as exc:
            raise PipelineError(str(exc)) from None

    def _sequence_spec(self) -> Any:
        """The model's sequence condition, or one line saying it takes no prompt."""
        seq = sequence_field(self.cond_spec)[1]
        if seq is None:
            raise PipelineError(f"this model takes no prompt (it is conditioned on "
                                f"{self.cond_spec.describe()}); drop prompt=")
        return seq

    def _texts_in(self, cond: Any) -> tuple[Any, list[str] | None]:
        """``cond`` with texts in its sequence field encoded, and those texts (or None)."""
        field, seq = sequence_field(self.cond_spec)
        value = cond if field is None or not isinstance(cond, dict) else cond.get(field)
        if seq is None or not (isinstance(value, str) or (
                isinstance(value, (list, tuple)) and value and isinstance(value[0], str))):
            return cond, None
        texts = _prompt_list(value)
        encoded = self.encode_prompts(texts)
        return (encoded if field is None else {**cond, field: encoded}), texts

    def _prompted(self, cond: Any, n: int | None, prompt: Any, negative: Any,
                  guidance: float | None) -> tuple[Any, Any, int | None, list[str] | None]:
        """(cond, uncond, n, each sample's prompt) from ``prompt=`` / ``negative_prompt=``."""
        field = sequence_field(self.cond_spec)[0]
        if prompt is not None or negative is not None:
            self._sequence_spec()
        if prompt is not None:
            if field is None and cond is not None or isinstance(cond, dict) and field in cond:
                raise PipelineError("pass the prompt once: prompt= or cond=, not both")
            texts = [t for t in _prompt_list(prompt) for _ in range(1 if n is None else n)]
            cond, n = (texts if field is None else {**(cond or {}), field: texts}), len(texts)
        cond, prompts = self._texts_in(cond)
        if negative is None and guidance is not None and prompts is not None:
            negative = (self._sequence_spec().encoder or {}).get("null_prompt")
        if negative is None:
            return cond, None, n, prompts
        if guidance is None:
            raise PipelineError("negative_prompt= replaces the null prompt under guidance: "
                                "pass guidance= too")
        negative = _prompt_list(negative)
        uncond, _ = self._texts_in(negative if field is None
                                   else {**(cond or {}), field: negative})
        return cond, uncond, n, prompts

    def _parts(self, compose: Any, cond: Any, n: int | None, prompt: Any
               ) -> list[tuple[Any, float]] | None:
        """``compose``'s pairs with their texts as conditions: one text for every sample, one
        per prompt (repeated as the prompts are), or one per sample."""
        if compose is None:
            return None
        compose = compose_pairs(compose)
        field = sequence_field(self.cond_spec)[0]
        per = 1 if prompt is None or n is None or isinstance(prompt, str) else \
            n // max(len(prompt), 1)
        out = []
        for value, weight in compose:
            if isinstance(value, (list, tuple)) and value and per > 1 and \
                    len(value) == len(prompt):
                value = [v for v in value for _ in range(per)]
            if isinstance(value, str) or (isinstance(value, (list, tuple)) and value
                                          and isinstance(value[0], str)):
                value = value if field is None else {**(cond or {}), field: value}
            out.append((self._texts_in(value)[0], weight))
        return out

    def sampling_times(self, sampler: str | None = None, steps: int | None = None,
                       **options: Any) -> tuple[torch.Tensor, str]:
        """The times ``generate`` would step through with these arguments (float64, from
        ``t_max`` down to 0) and the grid's label (``logsnr``, ``calibrated``, ...)."""
        sampler, steps, options = self._sampler_choice(
            sampler, steps, sampler_options(self.domain, options))
        grid, label = self._grid(sampler, steps, options)
        ts, _ = resolve_grid(self.model.schedule, None if _explicit(grid) else steps, grid,
                             sampler)
        return ts, label

    def _sampler_choice(self, sampler: str | None, steps: int | None,
                        options: dict[str, Any]) -> tuple[str, int | None, dict[str, Any]]:
        """(sampler, steps, options) with the model's defaults filled in: its own sampler
        brings its steps and grid (:attr:`default_sampler`); another sampler gets 20 steps."""
        default = self.default_sampler
        own = sampler in (None, default["name"])  # the model's own sampler: its steps, grid
        if own and default.get("grid") and "grid" not in options:
            options = {**options, "grid": default["grid"]}
        if steps is None and not _explicit(options.get("grid")):
            steps = int(default["steps"]) if own else DEFAULT_STEPS
        return sampler or str(default["name"]), steps, options

    def _grid(self, sampler: str, steps: int | None, options: dict[str, Any]
              ) -> tuple[Any, str]:
        """(the grid to sample on, its label): the stored calibrated one unless the caller
        named a grid or passed times; ``"calibrated"`` without a stored one is an error."""
        grid = options.get("grid")
        if grid == "diffusers":
            return self._diffusers_grid(sampler, steps), "diffusers"
        if _explicit(grid) or (grid is not None and grid != "calibrated"):
            return grid, grid if isinstance(grid, str) else "explicit"
        times = stored_grid(self.info.get("grids"), sampler, steps, options)
        if times is not None:
            return times, "calibrated"
        if grid == "calibrated":
            have = ", ".join(sorted(self.info.get("grids") or {})) or "none"
            key = grid_key(sampler, steps, options)
            raise PipelineError(f"no calibrated grid for {key} in this checkpoint (it has: "
                                f"{have}); run `omnidiff calibrate checkpoint=... "
                                f"sampler={sampler} steps={steps}` first")
        return None, default_grid(self.model.schedule, sampler)

    def _diffusers_grid(self, sampler: str, steps: int | None) -> torch.Tensor:
        """The times a diffusers scheduler of ``sampler`` evaluates at for ``steps`` steps,
        from the scheduler config of the folder this model was loaded from."""
        source = self.info.get("diffusers")
        if not source:
            raise PipelineError("grid='diffusers' reproduces the timesteps of a diffusers "
                                "scheduler; it is for models loaded from a diffusers folder")
        try:
            return diffusers_times(source["scheduler"], sampler, steps or DEFAULT_STEPS)
        except UserError as exc:
            raise PipelineError(str(exc)) from None

    @torch.no_grad()
    def calibrate(self, sampler: str = "dpmpp_2m", steps: int = 5, *, n: int | None = None,
                  guidance: float | None = None, cond: Any = None,
                  seed: int = CALIBRATION_SEED, stats: dict | None = None,
                  **options: Any) -> torch.Tensor:
        """Fit this model's time grid for ``sampler`` at ``steps`` steps
        (:func:`~omnidiff.samplers.calibrate.calibrate_grid`) and keep it in :attr:`info`
        (``grids``), where :meth:`generate` finds it; ``omnidiff calibrate`` writes it into
        model.pt. ``n`` calibration samples (default: 4096 values' worth, 64 to 256) from
        their own noise (``seed``; not :meth:`generate`'s), under ``guidance`` with ``cond``
        as in :meth:`generate` (a conditional model's labels drawn uniformly). ``options`` go
        to the sampler and to ``calibrate_grid`` (``rtol``, ``max_evals``, ``verbose``).
        Returns the grid: (steps + 1,) times.

        A consistency student's ``consistency`` grid is chosen differently: its inner times
        among its training levels, by the domain's main metric (:meth:`_choose_levels`)."""
        check_request(sampler, self.cond_spec, steps=steps, guidance=guidance, n=n, seed=seed)
        if sampler == "consistency" and isinstance(self.model, ConsistencyModel) and not options:
            return self._choose_levels(int(steps), n=n, guidance=guidance, seed=seed,
                                       stats=stats)
        options = sampler_options(self.domain, options)
        if n is None:  # about 4k values: 256 2D points, 64 8x8 images or anything larger
            n = max(64, min(256, 4096 // max(1, math.prod(self.event_shape))))
        gen = torch.Generator().manual_seed(int(seed))
        noise, cond = noise_and_cond(self.cond_spec, cond, n, gen, self.event_shape,
                                      self._shape_for)
        device, dtype = device_dtype(self.model, None)
        c = self.model.encode_cond(map_cond(lambda v: v.to(device), cond))
        fn = classifier_free(self.model, c, guidance)
        st = {} if stats is None else stats
        tuning = {k: options.pop(k) for k in ("rtol", "max_evals", "verbose", "tol")
                  if k in options}
        tuning["start"] = options.pop("grid", None)
        grid = calibrate_grid(fn, noise.to(device=device, dtype=dtype),
                              schedule=self.model.schedule, prediction=self.model.prediction,
                              sampler=sampler, steps=int(steps), stats=st, **tuning, **options)
        self.info.setdefault("grids", {})[grid_key(sampler, steps, options)] = {
            "times": grid.tolist(), "guidance": guidance, "n": int(noise.shape[0]),
            "seed": int(seed), "start": st["start"], "start_median": st["start_error"]["median"],
            "median": st["error"]["median"], "seconds": st["seconds"]}
        return grid

    def _choose_levels(self, steps: int, *, n: int | None, guidance: float | None, seed: int,
                       stats: dict | None) -> torch.Tensor:
        """A consistency student's ``steps``-step grid: logsnr_trailing's inner times, each
        moved to one of the student's training levels where that lowers the domain's main
        metric (``main_metric``, lower is better) of ``n`` samples (default 4096) against the
        held-out reference; every candidate from the same noise (``seed``), so the comparison
        is paired (:func:`~omnidiff.methods.consistency.choose_times`)."""
        t0, n = time.perf_counter(), int(n or 4096)
        levels = int((self.info.get("consistency") or {}).get("levels")
                     or DISTILL_DEFAULTS["levels"])  # a student from before levels were kept
        candidates = level_candidates(self.model.schedule, levels)
        named = default_grid(self.model.schedule, "consistency")  # logsnr_trailing
        start = timesteps(self.model.schedule, steps, named).tolist()
        seen: dict[str, float] = {}

        def score(grid: list[float]) -> float:
            x = self.generate(n, sampler="consistency", steps=steps, grid=grid,
                              guidance=guidance, seed=seed, progress=False)
            m = self.metrics(x, n_ref=n)
            name = seen.setdefault("metric", self._main_metric(m))
            return m[name]

        grid, value, first = choose_times(score, start, candidates)
        st = {} if stats is None else stats
        st.update(metric=seen["metric"], start=named, start_value=first, value=value,
                  n=n, seconds=time.perf_counter() - t0)
        self.info.setdefault("grids", {})[grid_key("consistency", steps)] = {
            "times": grid, "guidance": guidance, "seed": int(seed), "levels": levels,
            **{k: st[k] for k in ("metric", "start", "start_value", "value", "n", "seconds")}}
        return torch.tensor(grid, dtype=torch.float64)

    def _main_metric(self, metrics: dict[str, float]) -> str:
        """The first of the domain's ``main_metric`` names among ``metrics``, else the first."""
        names = main_metric_names(self.domain)
        return next((k for k in names if k in metrics), next(iter(metrics)))

    def log_likelihood(self, x: torch.Tensor, *, cond: Any = None, divergence: str = "auto",
                       solver: str = "rk45", steps: int = 50, rtol: float = 1e-5,
                       atol: float = 1e-5, dequantize: int | None = None,
                       seed: int | None = 0, batch_size: int | None = None):
        """Exact log-likelihood of data ``x: (n, *event)`` through the probability-flow ODE.

        Returns :class:`~omnidiff.samplers.likelihood.LogLikelihood` (``nats`` and ``bits_per_dim``
        per sample, ``nfe``; a latent model's are of the encoded data, ``space="latent"``).
        ``divergence``: exact | hutchinson | auto; ``solver``: rk45 | heun (``steps``);
        ``dequantize``: levels of discrete data in [-1, 1] (e.g. 256).
        ``cond``: the condition of each sample (None: the model's null condition).
        """
        if isinstance(self.model, ConsistencyModel):
            raise PipelineError("a consistency student maps noise to data in a few jumps and "
                                "has no probability-flow ODE of its own; compute likelihoods "
                                "with its teacher (model.pt's distilled.teacher)")
        self._check(x)
        cond = self._checked_cond(cond, x.shape[0])
        space = "data"
        if self.decode is not None:  # a latent model: the density of the data's latents
            if dequantize:
                raise PipelineError("dequantize= applies to discrete data, not to the latents "
                                    "a latent model's likelihood is computed on; drop it")
            x, space = self.domain.encode(x.to(self.device)).cpu(), "latent"
        gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
        bs = int(batch_size) if batch_size else auto_batch(x.shape[0], self.event_shape)
        dtype = next(self.model.parameters()).dtype
        parts, nfe = [], 0
        for i in range(0, x.shape[0], bs):
            c = map_cond(lambda v: v.to(self.device), index_cond(cond, slice(i, i + bs)))
            xb, log_scale = self._in_prior(x[i:i + bs].to(self.device), c, dequantize)
            c = self.model.encode_cond(c)
            r = log_likelihood(conditional(self.model, c), xb,
                               schedule=self.model.schedule, prediction=self.model.prediction,
                               divergence=divergence, solver=solver, steps=steps, rtol=rtol,
                               atol=atol, dequantize=dequantize, generator=gen, dtype=dtype)
            if log_scale is not None:  # change of variables x = scale * z
                r.nats = r.nats - log_scale.to(r.nats)
                r.bits_per_dim = -r.nats / (xb[0].numel() * math.log(2))
            parts.append(r)
            nfe += r.nfe
        return LogLikelihood(nats=torch.cat([r.nats.cpu() for r in parts]),
                             bits_per_dim=torch.cat([r.bits_per_dim.cpu() for r in parts]),
                             nfe=nfe, space=space)

    def _in_prior(self, x: torch.Tensor, cond: Any, dequantize: Any
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(z, sum of log scale per sample)`` for a model with a data-dependent prior
        (``x = scale * z``), else ``(x, None)``."""
        scale = self.model.prior_scale(cond)
        if scale is None:
            return x, None
        if dequantize:
            raise PipelineError("dequantize= applies to discrete data, and this model "
                                "diffuses its data divided by a prior scale; drop it")
        scale = scale.to(x.device)  # (b, *event)
        return (x / scale).to(x.dtype), scale.log().flatten(1).sum(1)  # (b, *event), (b,)

    def _checked_cond(self, cond: Any, n: int) -> Any:
        return check_cond(self.cond_spec, self._texts_in(cond)[0], n)[0]

    def _cond_for(self, samples: torch.Tensor, cond: Any) -> Any:
        if cond is not None:
            return self._checked_cond(cond, samples.shape[0])
        if samples is self._last_samples:
            return self.last_cond
        return None

    # ---- files and metrics ----------------------------------------------------------------
    def save(self, samples: torch.Tensor, out_dir: str | Path, *, cond: Any = None,
             prefix: str = "samples", known: torch.Tensor | None = None) -> list[Path]:
        """Write the domain's artifacts (images, audio, plots + raw tensors) to ``out_dir``.
        ``known`` (bool, like ``samples``; default: the last :meth:`generate`'s ``mask`` for
        its samples) shows the given part apart from the filled one, where the domain draws
        it (the mask outlined on images, the gap shaded on spectrograms, given frames
        outlined on strips)."""
        self._check(samples, any_shape=self.cond_spec.variable_shape)

        extra = {"data": self.data()} if takes_data_module(self.domain, "save_artifacts") else {}
        if known is None and samples is self._last_samples:
            known = self.last_mask
        if known is not None and takes_keyword(self.domain, "save_artifacts", "known"):
            extra["known"] = torch.as_tensor(known).bool().expand(samples.shape)
        if cond is None and samples is self._last_samples and self.last_prompts is not None \
                and takes_keyword(self.domain, "save_artifacts", "captions"):
            extra["captions"] = self.last_prompts
        if self.class_names and takes_keyword(self.domain, "save_artifacts", "class_names"):
            extra["class_names"] = self.class_names
        return [Path(p) for p in self.domain.save_artifacts(
            samples, Path(out_dir), cond=self._cond_for(samples, cond), prefix=prefix, **extra)]

    def reference(self, n: int, seed: int = 0) -> tuple[torch.Tensor, Any]:
        """``n`` held-out samples from the training data's config and their conditions
        (cached)."""
        if self._reference is None or self._reference[0] < n:
            ref = self.data(setup=True).reference(n, torch.Generator().manual_seed(seed))
            self._reference = (n, ref)
        x, c = self._reference[1]
        return x[:n], index_cond(c, slice(0, n))

    def metrics(self, samples: torch.Tensor, *, n_ref: int = 2048, cond: Any = None,
                seed: int = 0) -> dict[str, float]:
        """The domain's quality metrics of ``samples`` against ``n_ref`` reference samples;
        labelled samples of some classes only (``cond=3``) against the reference samples of
        those classes."""
        self._check(samples, any_shape=self.cond_spec.variable_shape)

        ref, ref_cond = self.reference(n_ref, seed)
        cond = self._cond_for(samples, cond)
        if isinstance(self.cond_spec, LabelCond) and isinstance(cond, torch.Tensor) \
                and isinstance(ref_cond, torch.Tensor):
            keep = torch.isin(ref_cond, cond.unique())  # (n_ref,) the same classes
            if 1 < int(keep.sum()) < len(keep):
                ref, ref_cond = ref[keep], ref_cond[keep]
        fn = self.domain.metrics
        out = fn(samples, ref, cond=cond, ref_cond=ref_cond, **data_kwargs(fn, self.data()))
        return {k: float(v) for k, v in out.items()}

    def _check(self, samples: torch.Tensor, any_shape: bool = False) -> None:
        """Data of this model: ``(n, *sample_shape)`` (any sizes of that rank with
        ``any_shape``)."""
        ok = isinstance(samples, torch.Tensor) and (
            samples.dim() == len(self.sample_shape) + 1 if any_shape
            else tuple(samples.shape[1:]) == self.sample_shape)
        if not ok:
            shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples)
            want = ", ".join(map(str, self.sample_shape))
            raise PipelineError(f"samples must have shape (n, {want}) for this model, got "
                                f"{shape}")

    @classmethod
    def from_payload(cls, payload: dict[str, Any], device: torch.device | str | None = None
                     ) -> "Pipeline":
        """The Pipeline of a ``model.pt`` dict (:func:`~omnidiff.model_file.read_checkpoint`)."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        spec = ModelSpec.from_payload(payload)
        ae = None
        if payload.get("autoencoder"):  # latent diffusion: samples are decoded to data
            ae = read_autoencoder(payload["autoencoder"], "the checkpoint's autoencoder")
            ae = ae.to(device)
        domain = spec.build_domain(ae)
        model = spec.build(domain)
        _load_weights(model, payload)
        model.to(device).eval()
        info = {k: v for k, v in payload.items() if k not in ("state_dict", "autoencoder")}
        return cls(model, spec, domain=domain, info=info)


def _prompt_list(prompts: Any) -> list[str]:
    """:func:`~omnidiff.text.prompts.check_prompts`, its mistakes as :class:`PipelineError`."""
    try:
        return check_prompts(prompts)
    except ConditionError as exc:
        raise PipelineError(str(exc)) from None


def _load_weights(model: DiffusionModel, payload: dict[str, Any]) -> None:
    """The checkpoint's weights into ``model``; one line when they do not fit its network."""
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        ours, theirs = set(model.state_dict()), set(payload["state_dict"])
        raise CheckpointError(
            f"the checkpoint's weights do not fit the {payload['domain']!r} network built "
            f"from its config ({len(ours - theirs)} missing, {len(theirs - ours)} unexpected"
            f", or mismatched shapes): was it written by another version of the domain "
            f"plugin (checkpoint: omnidiff {payload.get('omnidiff_version')})?") from exc


def load(checkpoint: str | Path, device: torch.device | str | None = None,
         threads: int | None = None) -> Pipeline:
    """A :class:`Pipeline` from ``model.pt`` (``omnidiff train``'s export) or a Lightning
    ``.ckpt`` of :class:`~omnidiff.training.DiffusionModule` (EMA weights when trained with EMA).
    Both are read with ``torch.load(weights_only=True)``. ``threads``: torch's CPU threads for
    this process (None: ``OMP_NUM_THREADS``, else the CPUs it may use; see
    :mod:`omnidiff.threads`)."""
    device = check_device(device)  # before reading the file
    use_threads(threads)
    return Pipeline.from_payload(read_checkpoint(checkpoint), device=device)


def check_device(device: torch.device | str | None) -> torch.device | None:
    """``device`` as a torch device this machine has (None stays None: CUDA when available);
    :class:`PipelineError` names the choices otherwise."""
    if device is None or isinstance(device, torch.device) and device.type == "cpu":
        return device
    try:
        dev = torch.device(device if isinstance(device, (str, torch.device)) else str(device))
    except (RuntimeError, TypeError, ValueError):
        raise PipelineError(f"device={device!r} is not a device; pass cpu, cuda, cuda:N or mps"
                            ) from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available()}.get(dev.type, False)
    if dev.type == "cuda" and available and dev.index is not None:
        available = dev.index < torch.cuda.device_count()
    if not available:
        raise PipelineError(f"device={device!r} is not available on this machine; pass "
                            "device=cpu (or leave it out: CUDA when there is one)")
    return dev

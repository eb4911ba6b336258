"""The batched generation loop every caller shares (``Pipeline.generate``, evaluation during
training, reflow's pairs, the contract check): checked request, one seeded generator, the
condition drawn or checked, classifier-free guidance, batches, optional decoding."""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, Callable, Sequence

import torch

from omnidiff._util import INT64_MAX, number_problem
from omnidiff.core.conditions import CondSpec, as_cond_spec, index_cond, map_cond
from omnidiff.core.guidance import autoguided, classifier_free, composed, conditional
from omnidiff.core.model import DiffusionModel
from omnidiff.core.steering import guided_by_xt
from omnidiff.errors import ConditionError, PipelineError
from omnidiff.samplers.denoiser import parse_clip
from omnidiff.samplers.imputation import batch_of
from omnidiff.samplers.sampling import SAMPLERS, sample
from omnidiff.samplers.watch import ProgressSteps, SamplingStep

__all__ = ["generate_samples", "sampler_options", "check_request", "check_cond",
           "compose_pairs", "noise_and_cond", "device_dtype", "auto_batch"]


CONTROL_STATS = ("method", "strength")  # what sample() reports of imputation and editing


def auto_batch(n: int, event_shape: Sequence[int]) -> int:
    numel = max(1, math.prod(event_shape))
    return max(1, min(n, 1024, max(16, 2 ** 20 // numel)))


def check_cond(spec: CondSpec, cond: Any, n: int | None) -> tuple[Any, int | None]:
    """``spec.check`` with its mistakes reported as :class:`PipelineError`."""
    try:
        return spec.check(cond, n)
    except ConditionError as exc:
        raise PipelineError(str(exc)) from None


def _prepare_cond(spec: CondSpec, cond: Any, n: int | None, gen: torch.Generator
                  ) -> tuple[Any, int]:
    """The user's condition checked against ``spec``, and the number of samples it implies.

    Labels are drawn uniformly from ``gen`` when a label-conditional model gets none.
    """
    if n is not None:
        if isinstance(n, bool) or int(n) != n or int(n) < 1:
            raise PipelineError(f"n must be a positive integer, got {n!r}")
        n = int(n)
    cond, n = check_cond(spec, cond, n)
    if n is None:
        raise PipelineError("pass n (the number of samples), or a condition that fixes it")
    if cond is None and spec.conditional:
        cond = spec.draw(n, gen)
        if cond is None:
            raise PipelineError(f"this model is conditioned on {spec.describe()}: pass cond= "
                                "(Pipeline.reference(n) holds held-out conditions; "
                                "Pipeline.condition(x) computes one from data)")
    return cond, n


def device_dtype(model: DiffusionModel, device: Any) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (
        param.device if param is not None else torch.device("cpu"))
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return device, dtype


def _watcher(progress: bool | str | None, batches: int,
             callback: Callable[[SamplingStep], Any] | None) -> Any:
    """The step callback of a run: ``callback``, under a progress bar over every batch's
    steps when ``progress`` asks for one (True, or the bar's description; None: when there
    are more than 4 batches) and a terminal shows it (into a log file, no bar: and nobody
    then watches the steps, so the denoiser computes no clean estimate for them)."""
    if progress is None:
        progress = batches > 4
    if not progress or not sys.stderr.isatty():
        return callback
    return ProgressSteps(batches, progress if isinstance(progress, str) else "sampling",
                         then=callback)


def check_request(sampler: str, spec: CondSpec, *, autoguided: bool = False,
                  **values: Any) -> None:
    """A generate request's names and numbers: ``n``, ``steps``, ``batch_size`` integers
    >= 1, ``seed`` an integer in [0, 2**63), ``guidance`` a finite number >= 0 (None: not
    set); one :class:`PipelineError` naming the value otherwise."""
    if sampler not in SAMPLERS:
        raise PipelineError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    rules = {"n": (int, 1), "steps": (int, 1), "batch_size": (int, 1), "seed": (int, 0),
             "guidance": (float, 0)}
    for key, value in values.items():
        problem = None if value is None else number_problem(key, value, *rules[key], INT64_MAX)
        if problem:
            raise PipelineError(problem)
    if autoguided and values.get("guidance") is None:
        raise PipelineError("guide_model= (autoguidance) needs guidance= (its scale, e.g. 2)")
    if values.get("guidance") is not None and not spec.conditional and not autoguided:
        raise PipelineError("guidance needs a conditional model; this one is unconditional "
                            "(drop guidance=, or guide it by a weaker model: guide_model=)")


def noise_and_cond(spec: CondSpec, cond: Any, n: int | None, gen: torch.Generator,
                    event_shape: Sequence[int], shape_for: Callable | None
                    ) -> tuple[torch.Tensor, Any]:
    """Standard normal noise (n, *event) float32 from ``gen`` and the checked condition (labels
    drawn from ``gen`` when needed; a condition that fixes the shape sets the event)."""
    cond, n = _prepare_cond(spec, cond, n, gen)
    if shape_for is not None and cond is not None and spec.variable_shape:
        event_shape = tuple(int(s) for s in shape_for(cond))
    noise = torch.randn((n, *event_shape), generator=gen, dtype=torch.float32)  # (n, *event)
    return noise, cond


@torch.no_grad()
def generate_samples(model: DiffusionModel, n: int | None = None, *,
                     event_shape: Sequence[int], cond_spec: Any = None,
                     sampler: str = "dpmpp_2m", steps: int | None = 20,
                     guidance: float | None = None,
                     cond: Any = None, seed: int | None = None, batch_size: int | None = None,
                     device: torch.device | str | None = None, progress: bool | str | None = None,
                     shape_for: Callable[[Any], Sequence[int]] | None = None,
                     decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     noise: torch.Tensor | None = None, stats: dict | None = None,
                     uncond: Any = None, compose: Sequence[tuple[Any, float]] | None = None,
                     known: Any = None, mask: Any = None, init: Any = None,
                     guide_model: DiffusionModel | None = None,
                     classifier: Callable[..., torch.Tensor] | None = None,
                     classifier_labels: Any = None, classifier_scale: float = 1.0,
                     callback: Callable[[SamplingStep], Any] | None = None,
                     **options: Any) -> tuple[torch.Tensor, Any]:
    """Draw samples ``(n, *event)`` (on CPU) and their conditions (or None); with ``decode``
    (a latent domain's), each batch is decoded to data ``(n, *sample_shape)``.

    ``cond_spec`` is the model's :class:`~omnidiff.core.conditions.CondSpec` (a legacy class count
    reads as labels); ``cond`` is checked against it, and ``n`` may follow from it. When the
    spec's shape varies, ``shape_for(cond)`` gives the event shape the condition fixes.
    ``options`` go to :func:`omnidiff.samplers.sample` (``grid``, ``clip_x0``, ``eta``,
    ``order``, ``s_churn``, ...).

    All noise comes from one ``torch.Generator`` seeded with ``seed`` (a random seed when
    None), so results do not depend on ``batch_size`` for deterministic fixed-step samplers
    (``rk45`` shares its adaptive steps across a batch: its results agree to its tolerance). A
    label-conditional model with ``cond=None`` draws labels uniformly from that generator.
    ``noise`` (n, *event), when given, is the starting noise (n follows from it): reflow's
    pairs keep it beside the sample it leads to. ``stats``, if a dict, receives ``steps``,
    ``nfe`` (denoiser calls per sample) and ``network_evals`` (network passes per sample: 2
    per call under guidance), averaged over batches where an adaptive sampler differs.
    ``uncond`` (checked like ``cond``, one or n) replaces the null condition under guidance
    (a negative prompt). ``compose``: ``(condition, weight)`` pairs (each condition checked
    like ``cond``) whose pushes ``weight (c_i - u)`` add to guidance's (composable diffusion,
    :func:`~omnidiff.core.guidance.composed`), e.g. the part of a prompt that names one
    attribute, so that attribute is not drowned by the rest. What stays fixed over a run (a
    prompt's encoding) is computed once per batch (:meth:`DiffusionModel.encode_cond`), not
    per step.

    ``known``, ``mask``, ``init`` (one sample ``(*event)`` or one per sample) are split into
    batches with the noise and go to :func:`~omnidiff.samplers.sample` with ``method``,
    ``strength``, ``guide`` and ``guide_scale`` (imputation, editing, guidance by a function;
    :mod:`~omnidiff.samplers.control`): they act on the model's own samples, so not on a
    latent model's (with ``decode``). ``guide_model`` (a weaker model of the same schedule
    and prediction) turns ``guidance`` into autoguidance (Karras et al. 2024):
    ``weak + guidance (model - weak)``, both under the same condition; it works for
    unconditional models. ``classifier`` (a noise-aware classifier ``c(x_t, t) -> logits``
    of the same schedule) guides towards ``classifier_labels`` (one, or one per sample) at
    ``classifier_scale`` (classifier guidance, :func:`~omnidiff.core.steering.guided_by_xt`).

    ``callback(step)`` is called after every step of every batch with a
    :class:`~omnidiff.samplers.watch.SamplingStep` (step, steps, time, the current clean
    estimate, batch index); ``progress`` shows a bar over all of them on a terminal (True, or
    the bar's description; None: when there are more than 4 batches).
    """
    spec = as_cond_spec(cond_spec)
    check_request(sampler, spec, n=n, steps=steps, guidance=guidance, seed=seed,
                   batch_size=batch_size, autoguided=guide_model is not None)
    _check_control(known, mask, init, decode, guide_model, compose, uncond)
    if seed is None:
        seed = int(torch.randint(0, 2 ** 31 - 1, ()).item())
    gen = torch.Generator().manual_seed(int(seed))
    if noise is None:
        noise, cond = noise_and_cond(spec, cond, n, gen, event_shape, shape_for)
    else:
        cond, _ = _prepare_cond(spec, cond, noise.shape[0], gen)
    if uncond is not None:
        uncond, _ = check_cond(spec, uncond, noise.shape[0])
    parts, weights = _checked_parts(spec, compose, guidance, noise.shape[0])
    per_sample = [None if v is None else batch_of(k, v, noise.shape) for k, v in
                  (("known", known), ("mask", mask), ("init", init))]
    per_sample.append(_labels(classifier, classifier_labels, noise.shape[0]))
    device, dtype = device_dtype(model, device)
    # stochastic samplers draw from a device generator seeded from the CPU one
    dev_gen = torch.Generator(device=device).manual_seed(
        int(torch.randint(0, 2 ** 62, (), generator=gen)))
    bs = int(batch_size) if batch_size else auto_batch(noise.shape[0], event_shape)

    batches = -(-noise.shape[0] // bs)
    watch = _watcher(progress, batches, callback)

    def run(x_T: torch.Tensor, c: Any, u: Any, kn: Any, m: Any, x_init: Any, labels: Any,
            *more: Any, stats: dict[str, Any], batch: int) -> torch.Tensor:
        raw, c, u = c, _encoded(model, c), _encoded(model, u)
        more = [_encoded(model, p) for p in more]
        if guide_model is not None:
            guided = autoguided(conditional(model, c),
                                conditional(guide_model, _encoded(guide_model, raw)), guidance)
        elif more:
            guided = composed(model, [c, *more], [guidance, *weights], uncond=u)
        else:
            guided = classifier_free(model, c, guidance, uncond=u)
        if classifier is not None:
            guided = guided_by_xt(guided, lambda x, t: classifier.log_prob(x, t, labels),
                                  float(classifier_scale), model.schedule, model.prediction)
        scale = model.prior_scale(raw)  # (b, *event): a data-dependent prior, or None
        kn, x_init, opts = _in_prior_space(scale, kn, x_init, options)
        z = sample(guided, x_T, schedule=model.schedule,
                   prediction=model.prediction, sampler=sampler,
                   steps=None if steps is None else int(steps), generator=dev_gen,
                   stats=stats, known=kn, mask=m, init=x_init,
                   callback=None if watch is None else
                   lambda info: watch(dataclasses.replace(info, batch=batch)), **opts)
        x = z if scale is None else z * scale.to(z.dtype)  # (b, *event) data
        return x if kn is not None else model.finish(x, raw)

    was_training = model.training
    model.eval()
    try:
        out, counts = _in_batches(run, noise, (cond, uncond, *per_sample, *parts), bs,
                                  (device, dtype), decode)
    finally:
        model.train(was_training)
        if isinstance(watch, ProgressSteps):
            watch.close()
    if stats is not None:
        stats.update(_mean_counts(counts))
    return torch.cat(out), cond


def _in_prior_space(scale: torch.Tensor | None, known: Any, init: Any,
                    options: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Control given in data space, for a model that diffuses ``z = x / scale``: known values
    and an initial sample divided by the scale, ``clip_x0`` and ``guide`` applied to
    ``scale * z0_hat`` (the data the sampler's estimate stands for)."""
    if scale is None:
        return known, init, options
    opts = dict(options)
    clip = parse_clip(opts.get("clip_x0"))
    if clip is not None:
        opts["clip_x0"] = lambda z0: clip(z0 * scale.to(z0.dtype)) / scale.to(z0.dtype)
    guide = opts.get("guide")
    if callable(guide):
        opts["guide"] = lambda z0: guide(z0 * scale.to(z0.dtype))
    div = lambda v: None if v is None else v / scale.to(v.dtype)  # noqa: E731
    return div(known), div(init), opts


def _check_control(known: Any, mask: Any, init: Any, decode: Any, guide_model: Any,
                   compose: Any, uncond: Any) -> None:
    """What imputation, editing and autoguidance cannot be combined with: one line each."""
    if decode is not None and any(v is not None for v in (known, mask, init)):
        raise PipelineError("known= / mask= / init= act on the model's own samples, and this "
                            "model generates latents that a decoder turns into data; impute "
                            "or edit with a model trained on the data itself")
    if guide_model is not None and (compose or uncond is not None):
        raise PipelineError("guide_model= (autoguidance) takes the unconditional branch's "
                            "place: drop compose= and negative prompts, or drop guide_model=")


def _labels(classifier: Any, labels: Any, n: int) -> torch.Tensor | None:
    """The classifier guidance's labels as ``(n,)`` long (one label: for every sample)."""
    if classifier is None:
        if labels is not None:
            raise PipelineError("label= is the class a classifier guides towards: pass "
                                "classifier= too")
        return None
    if labels is None:
        raise PipelineError("classifier= guides towards a class: pass label= (one, or one per "
                            "sample)")
    v = torch.as_tensor(labels)
    if v.is_floating_point() or v.dim() > 1 or (v.dim() == 1 and len(v) not in (1, n)):
        raise PipelineError(f"label= must be an integer or {n} of them, got {labels!r}")
    k = int(getattr(classifier, "num_classes", 0) or 0)
    if k and (v.min() < 0 or v.max() >= k):
        raise PipelineError(f"label= must be in 0..{k - 1} (the classifier's classes), got "
                            f"{v.tolist()}")
    return v.long().reshape(-1).expand(n)


def _checked_parts(spec: CondSpec, compose: Sequence[tuple[Any, float]] | None,
                   guidance: float | None, n: int) -> tuple[list[Any], list[float]]:
    """``compose``'s conditions (each checked for ``n`` samples) and weights (finite, >= 0),
    those of weight 0 left out; one :class:`PipelineError` for a mistake."""
    if not compose:
        return [], []
    if guidance is None:
        raise PipelineError("compose= adds to classifier-free guidance: pass guidance= too")
    compose = compose_pairs(compose)
    for _, w in compose:
        problem = number_problem("compose weight", w, float, 0)
        if problem:
            raise PipelineError(problem)
    kept = [(c, float(w)) for c, w in compose if w]  # a weight of 0 costs no network half
    return [check_cond(spec, c, n)[0] for c, _ in kept], [w for _, w in kept]


def compose_pairs(compose: Any) -> list[tuple[Any, Any]]:
    """``compose`` as a list of ``(condition, weight)`` pairs (one bare pair is a list of
    one); anything else is one :class:`PipelineError`."""
    if isinstance(compose, tuple) and len(compose) == 2 and not isinstance(compose[0], tuple):
        compose = [compose]  # one pair
    if not isinstance(compose, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 for p in compose):
        raise PipelineError("compose= takes (condition, weight) pairs, e.g. "
                            "compose=[(\"a 7\", 5.0)] for a prompt")
    return [tuple(p) for p in compose]


def _encoded(model: Any, cond: Any) -> Any:
    fn = getattr(model, "encode_cond", None)
    return cond if fn is None else fn(cond)


def _in_batches(run: Callable[..., torch.Tensor], noise: torch.Tensor,
                conds: tuple[Any, ...], bs: int, to: tuple[torch.device, torch.dtype],
                decode: Callable[[torch.Tensor], torch.Tensor] | None
                ) -> tuple[list[torch.Tensor], list[tuple[int, int, int, int, dict]]]:
    """``run(x_T, cond, uncond, known, mask, init, labels, *parts)`` over batches of ``bs``
    (each decoded when ``decode``): the samples (float32, on the CPU) and each batch's (size,
    steps, nfe, network evals, what control reports)."""
    device, dtype = to
    out, counts = [], []
    for k, i in enumerate(range(0, noise.shape[0], bs)):
        x_T = noise[i:i + bs].to(device=device, dtype=dtype)  # (b, *event)
        batch = [map_cond(lambda v: v.to(device), index_cond(x, slice(i, i + bs)))
                 for x in conds]
        st: dict[str, Any] = {}
        x0 = run(x_T, *batch, stats=st, batch=k)  # (b, *event)
        counts.append((x_T.shape[0], st["steps"], st["nfe"], st["network_evals"],
                       {k: st[k] for k in CONTROL_STATS if k in st}))
        if decode is not None:
            x0 = decode(x0)  # (b, *sample_shape)
        out.append(x0.float().cpu())
    return out, counts


def _mean_counts(counts: list[tuple[int, int, int, int, dict]]) -> dict[str, Any]:
    """Per-sample ``steps``, ``nfe`` and ``network_evals`` over batches ``(size, steps, nfe,
    network evals, control)``: the common value, or the sample-weighted mean when batches
    differ; with the control's ``method`` / ``strength``."""
    total = sum(c[0] for c in counts)
    out: dict[str, Any] = dict(counts[-1][4])  # what control reports (the same every batch)
    for j, key in enumerate(("steps", "nfe", "network_evals"), 1):
        values = {c[j] for c in counts}
        out[key] = (values.pop() if len(values) == 1
                    else round(sum(c[0] * c[j] for c in counts) / total, 2))
    return out


def sampler_options(domain: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The caller's sampler options over the domain's optional ``sample_defaults``."""
    return {**getattr(domain, "sample_defaults", {}), **options}

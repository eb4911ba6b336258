"""A data-dependent prior (PriorGrad) and auxiliary losses on the denoised estimate.

The prior is an invertible transform ``x = scale(cond) * z``: checked exactly on a Gaussian
whose denoiser is known (the probability-flow ODE of N(0, I) is the identity, so a sample is
its noise times the scale), with clipping, imputation and the likelihood's change of
variables. The auxiliary loss hook is checked against a replay of the same noise and times:
it sees the estimate the sampler's denoiser returns, taken back through the prior.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from omnidiff.core.conditions import LabelCond, TensorCond
from omnidiff.core.forward import add_noise
from omnidiff.core.losses import diffusion_loss, sample_time
from omnidiff.core.model import DiffusionModel
from omnidiff.core.schedules import get_schedule
from omnidiff.errors import ConfigError
from omnidiff.inference.pipeline import Pipeline
from omnidiff.model_spec import ModelSpec

SCALES = torch.tensor([0.5, 3.0])  # the prior's scale of class 0 and class 1


class _StandardNormalNet(nn.Module):
    """The exact eps-prediction for z ~ N(0, I) under a VP schedule, eps_hat = sigma(t) z_t,
    with a prior scale per class (along the event, so it is not one number)."""

    def __init__(self, prior: bool = True):
        super().__init__()
        self.schedule = get_schedule("cosine")
        self.prior = prior
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the network a dtype

    def forward(self, x, t, cond=None, drop=None):
        s = self.schedule.alpha_sigma(t.double())[1].to(x.dtype)
        return x * s[:, None, None] + 0 * self.anchor

    def prior_scale(self, cond):
        if not self.prior:
            return None
        ramp = torch.linspace(0.5, 1.5, 6)  # (T,)
        return SCALES[cond][:, None, None] * ramp  # (B, 1, T)


class _Domain:
    name = "toy"
    sample_defaults: dict = {}


def _pipe(prior: bool = True) -> Pipeline:
    model = DiffusionModel(_StandardNormalNet(prior), "cosine", "eps")
    spec = ModelSpec("toy", {}, {"name": "cosine"}, (1, 6), LabelCond(2), prediction="eps")
    return Pipeline(model, spec, domain=_Domain())


def test_samples_are_the_noise_times_the_prior_scale():
    labels = torch.tensor([0, 1, 1, 0])
    noise = torch.randn(4, 1, 6, generator=torch.Generator().manual_seed(0))
    scale = _pipe().model.prior_scale(labels)
    for sampler in ("ddpm", "ddim", "heun", "dpmpp_2m"):
        x = _pipe().generate(cond=labels, noise=noise, sampler=sampler, steps=8, seed=0)
        plain = _pipe(prior=False).generate(cond=labels, noise=noise, sampler=sampler,
                                            steps=8, seed=0)
        torch.testing.assert_close(x, plain * scale, atol=1e-5, rtol=1e-5)
    # the flow of N(0, I) is the identity, up to the solver's error at 8 steps
    torch.testing.assert_close(plain / noise, torch.ones_like(noise), atol=0.05, rtol=0)


def test_moments_follow_the_prior_and_guidance_keeps_them():
    labels = torch.arange(4000) % 2
    x = _pipe().generate(cond=labels, steps=20, seed=1, guidance=2.0)  # (4000, 1, 6)
    ramp = torch.linspace(0.5, 1.5, 6)
    for k in (0, 1):
        std = x[labels == k].std(0)[0]  # (6,)
        torch.testing.assert_close(std / (SCALES[k] * ramp), torch.ones(6), atol=0.06, rtol=0)


def test_clipping_and_known_values_act_on_data():
    labels = torch.tensor([1] * 64)
    x = _pipe().generate(cond=labels, steps=6, seed=2, clip_x0=1.0)
    assert x.abs().max() <= 1.0 + 1e-5  # in z, |z| <= 1 would allow values up to 4.5
    assert (x.abs() > 0.99).float().mean() > 0.2  # scale 3: many clipped at the data's range
    known = torch.full((1, 6), 2.0)
    mask = torch.tensor([[True, False, True, False, False, True]])
    y = _pipe().generate(cond=labels[:8], steps=6, seed=3, known=known, mask=mask)
    torch.testing.assert_close(y[:, mask], torch.full((8, 3), 2.0), atol=1e-4, rtol=0)


def test_likelihood_includes_the_change_of_variables():
    labels = torch.tensor([0, 1, 1])
    pipe = _pipe()
    x = pipe.generate(cond=labels, steps=8, seed=4)
    scale = pipe.model.prior_scale(labels)
    exact = torch.distributions.Normal(0.0, scale).log_prob(x).flatten(1).sum(1)  # (3,)
    ll = pipe.log_likelihood(x, cond=labels, divergence="exact")
    torch.testing.assert_close(ll.nats.float(), exact, atol=2e-3, rtol=0)
    torch.testing.assert_close(ll.bits_per_dim.float(), -exact / (6 * math.log(2)),
                               atol=1e-3, rtol=0)
    with pytest.raises(Exception, match="dequantize"):
        pipe.log_likelihood(x, cond=labels, dequantize=256)


class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1)

    def forward(self, x, t, cond=None, drop=None):
        return self.conv(x) * (1 + t[:, None, None])


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_the_aux_hook_sees_the_samplers_denoised_estimate(prediction):
    torch.manual_seed(0)
    model = DiffusionModel(_Linear(), "cosine", prediction)
    x0 = torch.randn(5, 1, 16)
    seen = {}

    def aux(x0_hat, target, cond):
        seen["x0_hat"], seen["x0"] = x0_hat.detach(), target
        return x0_hat.square().flatten(1).mean(1)

    g = torch.Generator().manual_seed(7)
    total, per = diffusion_loss(model, x0, schedule=model.schedule, prediction=prediction,
                                aux=aux, aux_weight=0.5, generator=g)
    g = torch.Generator().manual_seed(7)  # replay: the same times and noise
    t = sample_time(5, model.schedule, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = add_noise(x0, t, model.schedule, noise)
    expected = model.denoise(x_t, t.float())
    torch.testing.assert_close(seen["x0_hat"], expected, atol=1e-5, rtol=1e-5)
    assert seen["x0"] is x0
    plain, _ = diffusion_loss(model, x0, schedule=model.schedule, prediction=prediction,
                              generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(total, plain + 0.5 * expected.square().mean(), atol=1e-5,
                               rtol=1e-5)


def _vocoder_module(**model):
    from omnidiff.training.diffusion_module import DiffusionModule

    cfg = {"layers": 2, "channels": 8, "cycle": 2, "hop": 50, **model}
    spec = ModelSpec("audio", cfg, {"name": "cosine"}, (1, 400), TensorCond((40, None)),
                     prediction="v", data={"sample_rate": 8000, "cond": "mel"})
    return DiffusionModule(spec, loss={"aux": "stft", "p_uncond": 0.0})


def test_the_training_module_gives_the_aux_loss_data_not_the_diffused_variable():
    module = _vocoder_module(prior="energy", prior_gain=20.0, prior_range_db=100.0)
    x = 0.3 * torch.randn(3, 1, 400)
    mel = torch.rand(3, 40, 8)
    seen = {}
    module._aux = lambda x0_hat, x0, cond: seen.update(x0_hat=x0_hat.detach(), x0=x0) or (
        x0_hat.sum((1, 2)) * 0)
    module._loss({"x": x, "cond": mel}, generator=torch.Generator().manual_seed(3))
    model = module.model
    g = torch.Generator().manual_seed(3)
    t = sample_time(3, model.schedule, generator=g)
    noise = torch.randn(x.shape, generator=g)
    z_t = add_noise(model.to_prior(x, mel), t, model.schedule, noise)
    expected = model.from_prior(model.denoise(z_t, t.float(), mel), mel)
    torch.testing.assert_close(seen["x0_hat"], expected, atol=1e-5, rtol=1e-5)
    assert seen["x0"] is x
    scale = model.prior_scale(mel)
    assert scale.shape == (3, 1, 400) and float(scale.min()) >= 0.01
    torch.testing.assert_close(model.from_prior(model.to_prior(x, mel), mel), x)


def test_aux_and_prior_mistakes_are_one_line():
    with pytest.raises(ConfigError, match="loss.aux='mel' is not an auxiliary loss of the "
                                          "audio domain; choose from: stft"):
        from omnidiff.plugins.registry import get_domain

        get_domain("audio").aux_loss("mel", {})
    with pytest.raises(ConfigError, match="points domain has no auxiliary losses"):
        from omnidiff.training.diffusion_module import aux_loss_of

        aux_loss_of(type("P", (), {"name": "points"})(), "stft", {})
    with pytest.raises(ValueError, match="model.prior_gain"):
        _vocoder_module(prior="energy")
    with pytest.raises(ValueError, match="model.prior='loud'"):
        _vocoder_module(prior="loud")


def test_the_spectral_network_reads_and_writes_the_waveform_exactly():
    from omnidiff_domains.audio.networks import build_network

    net = build_network((1, 400), TensorCond((40, None)), arch="spectral", hop=50, layers=2,
                        channels=16, cycle=6)  # DiffWave's keys mean nothing to it
    assert net.n_fft == 256
    x = torch.randn(3, 1, 400)
    torch.testing.assert_close(net._istft(net._stft(x), 400), x, atol=1e-5, rtol=1e-5)
    out = net(x, torch.rand(3), torch.rand(3, 40, 8))
    assert out.shape == x.shape and float(out.detach().abs().max()) == 0.0  # zero-initialised
    with pytest.raises(ValueError, match="has 7 frames"):
        net(x, torch.rand(3), torch.rand(3, 40, 7))
    with pytest.raises(ValueError, match="model.arch=spectral is a vocoder"):
        build_network((1, 400), LabelCond(3), arch="spectral", hop=50)
    with pytest.raises(ValueError, match="model.arch='wavenet'; choose one of: diffwave, "
                                         "spectral"):
        build_network((1, 400), None, arch="wavenet")


def test_the_mel_projection_keeps_a_consistent_waveform_and_fixes_levels():
    from omnidiff_domains.audio.mel import MelProjection, MelSpec
    from omnidiff_domains.audio.metrics import logmel_db
    from omnidiff_domains.audio.tones import make_tones

    spec = MelSpec(8000)
    x = make_tones(torch.arange(6), 8000, 800, torch.Generator().manual_seed(0))  # (6, 1, 800)
    mel = spec(x[:, 0])
    torch.testing.assert_close(spec.project(x, mel, 1), x, atol=2e-3, rtol=0)
    # too quiet and with its high partials damped: projected back to its spectrogram
    damped = torch.fft.irfft(torch.fft.rfft(0.5 * x) * torch.linspace(1, 0.2, 401), n=800)
    before, after = logmel_db(spec, damped, mel), logmel_db(spec, spec.project(damped, mel, 3),
                                                            mel)
    assert float(after.mean()) < 0.3 * float(before.mean())
    assert MelProjection.of(0, None) is None
    with pytest.raises(ValueError, match="model.project needs model.mel"):
        MelProjection.of(3, None)
    with pytest.raises(ValueError, match="model.project must be an integer >= 0"):
        MelProjection.of(-1, {"sample_rate": 8000})


class _Finishing(_StandardNormalNet):
    def finish(self, x, cond):
        return x + 10.0


def test_generation_finishes_samples_except_imputations():
    model = DiffusionModel(_Finishing(prior=False), "cosine", "eps")
    spec = ModelSpec("toy", {}, {"name": "cosine"}, (1, 6), LabelCond(2), prediction="eps")
    pipe = Pipeline(model, spec, domain=_Domain())
    labels = torch.tensor([0, 1])
    noise = torch.randn(2, 1, 6, generator=torch.Generator().manual_seed(0))
    plain = _pipe(prior=False).generate(cond=labels, noise=noise, steps=4, seed=0)
    finished = pipe.generate(cond=labels, noise=noise, steps=4, seed=0)
    torch.testing.assert_close(finished, plain + 10.0)
    known = torch.zeros(1, 6)
    mask = torch.tensor([[True, True, True, False, False, False]])
    imputed = pipe.generate(cond=labels, noise=noise, steps=4, seed=0, known=known, mask=mask)
    assert float(imputed[:, :, :3].abs().max()) < 1e-4  # the known values, not finished
    assert float(imputed.abs().max()) < 9.0


def test_vocoder_data_fills_the_prior_and_the_projection():
    from omnidiff_domains.audio.data import AudioData

    data = AudioData(cond="mel", crop_frames=16, train_size=96, val_size=8)
    assert data.model_settings({"prior": "none"}) == {"mel": {"sample_rate": 8000,
                                                              **data.mel.s.to_dict()}}
    filled = data.model_settings({"prior": "energy"})
    assert filled["prior_range_db"] == 100.0 and filled["mel"]["hop_length"] == 50
    module = _vocoder_module(arch="diffwave", prior="energy", project=1,
                             **{k: v for k, v in filled.items()})
    x, mel = data.reference(64, generator=torch.Generator().manual_seed(1))
    z = module.model.to_prior(x[..., :400], mel[..., :8])
    assert 0.8 < float(z.std()) < 1.25  # the fitted gain makes the diffused variable ~N(0, 1)
    assert AudioData(cond="label").model_settings({"prior": "energy"}) == {}

"""diffusers models in omnidiff: schedules, exact side-by-side sampling, folders, mistakes.

Nothing is downloaded: tiny randomly initialised diffusers models are built from configs and
saved to temporary folders. Exactness is checked in float64 against diffusers' own scheduler
loops from the same noise (their coefficients are float32, hence ~1e-7, not ~1e-15)."""

import hashlib
import json

import pytest
import torch

import omnidiff
from omnidiff.core.schedules import get_schedule
from omnidiff.errors import OmnidiffError
from omnidiff.inference.pipeline import Pipeline
from omnidiff.model_spec import ModelSpec
from omnidiff.samplers import sample

diffusers = pytest.importorskip("diffusers")

BETAS = {"linear": {}, "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
         "squaredcos_cap_v2": {}}
# omnidiff sampler -> (diffusers scheduler, its options, omnidiff's options that match it)
PAIRS = {
    "ddim": ("DDIMScheduler", {}, {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}, {}),
    # diffusers' Euler steps in sigma = sigma / alpha on x / alpha (k-diffusion's form);
    # "leading" spacing: integer timesteps and a unit-variance start (its default "linspace"
    # puts timesteps between integers, where it interpolates sigma linearly, and starts at
    # sigma_max * noise instead of sqrt(sigma_max^2 + 1) * noise)
    "euler": ("EulerDiscreteScheduler", {"timestep_spacing": "leading"}, {"time": "sigma"}),
    "unipc": ("UniPCMultistepScheduler", {}, {}),
}


def tiny_unet(**extra):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, **extra)


def save_folder(path, model, scheduler):
    model.save_pretrained(path)
    scheduler.save_pretrained(path)
    return path


def diffusers_loop(model, scheduler, noise, steps, **step_options):
    """diffusers' own sampling loop (as its pipelines run it)."""
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = model(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(out, t, x, **step_options).prev_sample
    return x


def noise(n=2, seed=1, dtype=torch.float64):
    return torch.randn(n, 1, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("zero_snr", [False, True])
@pytest.mark.parametrize("betas", sorted(BETAS))
def test_discrete_schedule_is_the_schedulers_alphas_cumprod(betas, zero_snr):
    ref = diffusers.DDPMScheduler(beta_schedule=betas, rescale_betas_zero_snr=zero_snr,
                                  **BETAS[betas])
    ours = get_schedule("discrete", beta_schedule=betas, zero_terminal_snr=zero_snr,
                        **BETAS[betas])
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000  # timestep k at t = (k + 1) / N
    abar = ours.alpha(t) ** 2
    want = ref.alphas_cumprod.double()
    if zero_snr:  # 0 at the last step, floored so that x0 stays defined
        assert abar[-1] == pytest.approx(2.0 ** -24) and want[-1] < 1e-12
        abar, want = abar[:-1], want[:-1]
    assert (abar - want).abs().max() < 1e-15
    assert float(ours.alpha(torch.tensor(0.0))) == 1.0  # clean data at t = 0


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("betas", sorted(BETAS))
@pytest.mark.parametrize("sampler", sorted(PAIRS))
def test_samplers_reproduce_diffusers_schedulers(tmp_path, sampler, betas, prediction):
    cls, options, ours = PAIRS[sampler]
    scheduler = getattr(diffusers, cls)(beta_schedule=betas, prediction_type=prediction,
                                        **BETAS[betas], **options)
    if sampler == "ddim":
        scheduler = diffusers.DDIMScheduler.from_config(scheduler.config, clip_sample=False)
    unet = tiny_unet()
    pipe = omnidiff.load(save_folder(tmp_path / "m", unet, scheduler), device="cpu")
    pipe.model.double()
    x_T = noise()
    ref = diffusers_loop(unet.double(), scheduler, x_T, steps=10)
    grid = pipe._diffusers_grid(sampler, 10)
    x = sample(pipe.model, x_T, schedule=pipe.model.schedule, prediction=pipe.model.prediction,
               sampler=sampler, grid=grid, **ours)
    assert ((x - ref).norm() / ref.norm()).item() <= 1e-6
    # the same through generate(noise=, grid="diffusers") (float32 samples out)
    y = pipe.generate(noise=x_T, sampler=sampler, steps=10, grid="diffusers", clip_x0=None,
                      **ours)
    assert pipe.last_grid == "diffusers" and pipe.last_stats["nfe"] == 10
    assert ((y.double() - ref).norm() / ref.norm()).item() <= 1e-6


def test_ddim_clip_sample_is_clip_x0(tmp_path):
    """DDIMScheduler's default clip_sample clamps x0 to [-1, 1], which no ODE solver does:
    omnidiff's clip_x0=1 (the image domain's default) matches it with the noise estimate
    re-derived from the clipped x0 (GLIDE's rule; diffusers' use_clipped_model_output=True)."""
    scheduler = diffusers.DDIMScheduler()  # clip_sample=True
    unet = tiny_unet()
    pipe = omnidiff.load(save_folder(tmp_path / "m", unet, scheduler), device="cpu")
    pipe.model.double()
    x_T = noise(seed=3) * 3  # large enough that x0 estimates leave [-1, 1]
    ref = diffusers_loop(unet.double(), scheduler, x_T, steps=8, use_clipped_model_output=True)
    clipped = pipe.generate(noise=x_T, sampler="ddim", steps=8, grid="diffusers", clip_x0=1.0)
    free = pipe.generate(noise=x_T, sampler="ddim", steps=8, grid="diffusers", clip_x0=None)
    assert ((clipped.double() - ref).norm() / ref.norm()).item() <= 1e-6
    assert ((free.double() - ref).norm() / ref.norm()).item() > 1e-3


def test_pipeline_folder_class_labels_and_guidance(tmp_path):
    """A pipeline folder (unet/ + scheduler/); a class-conditional UNet2DModel takes labels,
    and with omnidiff.json naming its null class it can be guided."""
    unet = tiny_unet(num_class_embeds=4, class_embed_type=None)
    root = tmp_path / "pipe"
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(root)
    pipe = omnidiff.load(root, device="cpu")
    assert pipe.num_classes == 4 and pipe.event_shape == (1, 8, 8)
    a = pipe.generate(cond=[0, 1], steps=4, seed=0)
    b = pipe.generate(cond=[3, 1], steps=4, seed=0)
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1], atol=1e-6)
    with pytest.raises(OmnidiffError, match="null class"):
        pipe.generate(cond=[0], steps=2, guidance=2.0)
    (root / "unet" / "omnidiff.json").write_text(json.dumps({"null_class": 3}))
    pipe = omnidiff.load(root, device="cpu")
    assert pipe.num_classes == 3
    g = pipe.generate(cond=[0, 1], steps=4, seed=0, guidance=2.0)
    assert g.shape == (2, 1, 8, 8) and torch.isfinite(g).all()
    # likelihood given labels, and given nothing (the null class)
    for cond in ([0, 1], None):
        ll = pipe.log_likelihood(g, cond=cond, solver="heun", steps=3)
        assert torch.isfinite(ll.bits_per_dim).all()


def test_cross_attention_unet_takes_encoder_hidden_states(tmp_path):
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=4,
        cross_attention_dim=12, attention_head_dim=4)
    folder = save_folder(tmp_path / "c", unet, diffusers.EulerDiscreteScheduler())
    pipe = omnidiff.load(folder, device="cpu")
    pipe.model.double()
    emb = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(0))
    x_T = noise()
    got = pipe.generate(noise=x_T, cond={"embeddings": emb}, sampler="ddim", steps=3)
    # the padded, masked sequence gives what the unpadded one gives in diffusers
    sched = diffusers.DDIMScheduler.from_config(pipe.info["diffusers"]["scheduler"])
    t = torch.tensor(999.0)
    with torch.no_grad():
        ours = pipe.model.net(x_T, torch.full((2,), 1.0, dtype=torch.float64),
                              {"embeddings": torch.cat([emb, emb.new_zeros(2, 72, 12)], 1)
                               .double(), "mask": torch.arange(77).expand(2, 77) < 5}, None)
        ref = unet.double()(x_T, t, encoder_hidden_states=emb.double()).sample
    assert (ours - ref).abs().max() < 1e-10
    assert got.shape == (2, 1, 8, 8) and sched is not None


def test_calibrate_writes_a_sidecar_and_never_the_folder(tmp_path):
    folder = save_folder(tmp_path / "m", tiny_unet(), diffusers.DDIMScheduler())
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    pipe = omnidiff.load(folder, device="cpu")
    pipe.calibrate("ddim", 3, n=16)
    from omnidiff.model_file import write_grids
    dest = write_grids(folder, pipe.info["grids"])
    assert dest == tmp_path / "m.omnidiff.json" and dest.is_file()
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    assert after == before
    again = omnidiff.load(folder, device="cpu")
    again.generate(2, sampler="ddim", steps=3, seed=0)
    assert again.last_grid == "calibrated"


def test_generate_noise_for_any_model(tmp_path):
    folder = save_folder(tmp_path / "m", tiny_unet(), diffusers.DDIMScheduler())
    pipe = omnidiff.load(folder, device="cpu")
    x_T = noise(3, dtype=torch.float32)
    a = pipe.generate(noise=x_T, steps=3, seed=0)
    b = pipe.generate(noise=x_T, steps=3, seed=99)
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b)
    with pytest.raises(OmnidiffError, match=r"noise= must have shape \(3, 1, 8, 8\)"):
        pipe.generate(3, noise=torch.randn(2, 1, 8, 8))
    with pytest.raises(OmnidiffError, match="noise= must have shape"):
        pipe.generate(noise=torch.randn(2, 8, 8))


def _one_line(exc_info, *words):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_mistakes_are_one_line(tmp_path, monkeypatch):
    unet = tiny_unet()
    no_sched = tmp_path / "bare"
    unet.save_pretrained(no_sched)
    with pytest.raises(OmnidiffError) as info:
        omnidiff.load(no_sched, device="cpu")
    _one_line(info, "scheduler")
    for key, value, named in [("trained_betas", [0.1] * 1000, "trained_betas"),
                              ("prediction_type", "flow", "prediction_type"),
                              ("beta_schedule", "sigmoid", "beta_schedule")]:
        folder = save_folder(tmp_path / key, unet, diffusers.DDIMScheduler())
        cfg = json.loads((folder / "scheduler_config.json").read_text())
        cfg[key] = value
        (folder / "scheduler_config.json").write_text(json.dumps(cfg))
        with pytest.raises(OmnidiffError) as info:
            omnidiff.load(folder, device="cpu")
        _one_line(info, named)
    flow = save_folder(tmp_path / "flow", unet, diffusers.FlowMatchEulerDiscreteScheduler())
    with pytest.raises(OmnidiffError) as info:
        omnidiff.load(flow, device="cpu")
    _one_line(info, "FlowMatchEulerDiscreteScheduler", "beta_schedule")
    other = tmp_path / "vae"
    diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=4).save_pretrained(other)
    diffusers.DDIMScheduler().save_pretrained(other)
    with pytest.raises(OmnidiffError) as info:
        omnidiff.load(other, device="cpu")
    _one_line(info, "AutoencoderKL", "UNet2DModel")
    latent = tmp_path / "latent"
    save_folder(latent / "unet", unet, diffusers.DDIMScheduler())
    (latent / "model_index.json").write_text(json.dumps({
        "_class_name": "LDMPipeline", "unet": ["diffusers", "UNet2DModel"],
        "vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(OmnidiffError) as info:
        omnidiff.load(latent, device="cpu")
    _one_line(info, "latent pipeline", "vae")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "config.json").write_text("{}")
    with pytest.raises(OmnidiffError) as info:
        omnidiff.load(lone, device="cpu")
    _one_line(info)
    # grid="diffusers" needs a diffusers model
    spec = ModelSpec("points", {"name": "mlp", "width": 8, "depth": 1}, {"name": "cosine"},
                     (2,))
    with pytest.raises(OmnidiffError) as info:
        Pipeline(spec.build(spec.build_domain()), spec).generate(4, grid="diffusers")
    _one_line(info, "diffusers folder")


def test_missing_diffusers_package_is_one_line(tmp_path, monkeypatch):
    folder = save_folder(tmp_path / "m", tiny_unet(), diffusers.DDIMScheduler())
    import importlib
    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "diffusers":
            raise ImportError("no diffusers")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(OmnidiffError) as info:
        omnidiff.load(folder, device="cpu")
    _one_line(info, "pip install", "omnidiff[diffusers]")


def test_pipeline_folder_with_a_text_encoder_takes_prompts(tmp_path):
    """unet/ (cross-attention) + text_encoder/ + tokenizer/: prompts are encoded by the
    folder's own encoder, every padded position read, the empty prompt the null condition."""
    transformers = pytest.importorskip("transformers")
    from omnidiff.text.tokenizer import fit_tokenizer

    root = tmp_path / "t2i"
    tok = fit_tokenizer(["a three", "a seven", "on the left"])
    config = transformers.CLIPTextConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=16, intermediate_size=32,
        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=12,
        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    encoder = transformers.CLIPTextModel(config).eval()
    encoder.save_pretrained(root / "text_encoder")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]",
                                                unk_token="[UNK]")
    fast.save_pretrained(root / "tokenizer")
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=4,
        cross_attention_dim=16, attention_head_dim=4)
    unet.save_pretrained(root / "unet")
    diffusers.DDIMScheduler().save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "TinyTextToImagePipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"]}))
    pipe = omnidiff.load(root, device="cpu")
    value = pipe.encode_prompts(["a three", ""])
    ids = fast(["a three", ""], padding="max_length", max_length=12, return_tensors="pt")
    with torch.no_grad():
        want = encoder(input_ids=ids["input_ids"],
                       attention_mask=ids["attention_mask"]).last_hidden_state
    assert torch.allclose(value["embeddings"], want, atol=1e-6)
    assert value["mask"].all()  # the padded positions are read, as the pipelines do
    x_T = noise()
    guided = pipe.generate(noise=x_T, prompt=["a three", "a seven"], guidance=3.0,
                           sampler="ddim", steps=3)
    explicit = pipe.generate(noise=x_T, prompt=["a three", "a seven"], guidance=3.0,
                             negative_prompt="", sampler="ddim", steps=3)
    assert torch.equal(guided, explicit)  # the empty prompt is the null condition
    other = pipe.generate(noise=x_T, prompt=["a seven", "a seven"], guidance=3.0,
                          sampler="ddim", steps=3)
    assert not torch.allclose(guided[0], other[0]) and torch.allclose(guided[1], other[1])


def test_pipeline_folder_with_a_dit_transformer(tmp_path):
    """transformer/ (DiT, learning its variance: twice the channels out) + scheduler/: the
    first half is the prediction, its extra class embedding the null class of guidance."""
    root = tmp_path / "dit"
    torch.manual_seed(0)
    dit = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=2,
        num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=5).eval()
    dit.save_pretrained(root / "transformer")
    diffusers.DDIMScheduler(beta_schedule="linear").save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "DiTPipeline", "transformer": ["diffusers", "DiTTransformer2DModel"],
        "scheduler": ["diffusers", "DDIMScheduler"]}))
    pipe = omnidiff.load(root, device="cpu")
    assert pipe.num_classes == 5 and pipe.event_shape == (1, 8, 8)
    pipe.model.double()
    x = noise()
    labels = torch.tensor([1, 4])
    with torch.no_grad():
        ours = pipe.model.net(x, torch.full((2,), 0.5, dtype=torch.float64), labels, None)
        ref = dit.double()(x, torch.tensor([499.0, 499.0], dtype=torch.float64),
                           class_labels=labels).sample[:, :1]
        null = pipe.model.net(x, torch.full((2,), 0.5, dtype=torch.float64), labels,
                              torch.tensor([True, True]))
        ref_null = dit(x, torch.tensor([499.0, 499.0], dtype=torch.float64),
                       class_labels=torch.tensor([5, 5])).sample[:, :1]
    assert (ours - ref).abs().max() < 1e-10 and (null - ref_null).abs().max() < 1e-10
    g = pipe.generate(cond=[0, 3], guidance=2.0, steps=3, seed=0)
    assert g.shape == (2, 1, 8, 8) and torch.isfinite(g).all()

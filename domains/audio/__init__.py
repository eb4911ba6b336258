"""The ``audio`` domain: DiffWave-style waveform diffusion.

Registered under the entry-point group ``omnidiff.domains`` as
``audio = "omnidiff_domains.audio:AudioDomain"``. Submodules, one concept each:
:mod:`.diffwave` (a network), :mod:`.mel` (the one spectrogram definition + Griffin-Lim),
:mod:`.tones` (the generated dataset), :mod:`.files` (soundfile I/O), :mod:`.data`
(``AudioData``: tones or a folder), :mod:`.pitch`, :mod:`.metrics`,
:mod:`.artifacts`, :mod:`.prior` (PriorGrad's energy prior), :mod:`.aux_losses`
(``loss.aux=stft``), :mod:`.spectral` (``model.arch=spectral``), :mod:`.networks`; Hydra
defaults in ``conf/domain/audio.yaml``.

Heavy imports (Lightning, torchaudio, matplotlib) happen on first use.
"""

from __future__ import annotations

from omnidiff.plugins.contract import LazyDomain, lazy_exports

__all__ = ["AudioDomain", "AudioData", "DiffWave"]


class AudioDomain(LazyDomain):
    """Mono waveforms, event ``(1, samples)`` with values in [-1, 1].

    Networks (``model.arch``): :class:`~omnidiff_domains.audio.diffwave.DiffWave` (keys:
    layers, channels, cycle, compile; ``hop`` comes from the data's spectrogram settings) or,
    for a vocoder, :class:`~omnidiff_domains.audio.spectral.SpectralNet`; either may take the
    energy prior (``model.prior=energy``, :mod:`.prior`) and the mel-consistency projection
    (``model.project``). Auxiliary loss: ``loss.aux=stft``. Conditions (``data.cond``):
    label, none, mel (a vocoder), label+mel. Artifacts: WAVs, a log-mel PNG grid, ``.pt``,
    ``.npy``. Metrics: see :mod:`omnidiff_domains.audio.metrics`.
    """

    name = "audio"
    config_searchpath = "pkg://omnidiff_domains.audio.conf"
    data_factory = ".data:AudioData"
    network_factory = ".networks:build_network"
    artifact_writer = ".artifacts:save_artifacts"
    metrics_fn = ".metrics:audio_metrics"
    sample_defaults = {"clip_x0": 1.0}  # waveforms live in [-1, 1]
    main_metric = ("mrstft", "mel_profile_db")  # a vocoder's, else every model's
    aux_losses = {"stft": ".aux_losses:stft_loss"}  # loss.aux=stft


__getattr__ = lazy_exports(__name__, {"AudioData": ".data:AudioData",
                                      "DiffWave": ".diffwave:DiffWave"})

"""Hydra configs of the audio domain (pkg://omnidiff_domains.audio.conf)."""

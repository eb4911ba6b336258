"""Hydra configs of the image domain (search path pkg://omnidiff_domains.image.conf)."""

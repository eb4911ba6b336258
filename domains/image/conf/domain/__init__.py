"""The image domain's defaults for `model` and `data` (domain/image.yaml)."""

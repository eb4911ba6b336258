"""The audio domain's defaults (domain/audio.yaml)."""

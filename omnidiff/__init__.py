"""omnidiff: a multimodal diffusion toolkit with one domain-agnostic core."""

__version__ = "0.1.0"

__all__ = ["__version__", "load", "Pipeline"]


def __getattr__(name: str):
    # lazy: `import omnidiff` stays light; omnidiff.load / omnidiff.Pipeline import on first use
    if name in ("load", "Pipeline"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'omnidiff' has no attribute {name!r}")

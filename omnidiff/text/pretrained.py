"""A frozen pretrained text encoder through ``transformers``: CLIP's or T5's text encoder by
hub id (``openai/clip-vit-large-patch14``, ``google/t5-v1_1-base``) or a local folder written
by ``save_pretrained`` (its tokenizer beside it). Embeddings are computed once per distinct text
and cached; :attr:`PretrainedTextEncoder.calls` counts the encoder's forward passes."""

from __future__ import annotations

from typing import Sequence

import torch

from omnidiff.errors import ConditionError, UserError

__all__ = ["PretrainedTextEncoder", "MODEL_TYPES"]

MODEL_TYPES = {"clip": "CLIPTextModel", "clip_text_model": "CLIPTextModel",
               "t5": "T5EncoderModel", "umt5": "UMT5EncoderModel", "mt5": "MT5EncoderModel"}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UserError("a pretrained text encoder needs transformers: pip install "
                        "'omnidiff[text]'") from None
    return transformers


class PretrainedTextEncoder:
    """Texts -> ``(embeddings (n, L, D) float32, mask (n, L) bool)`` from a frozen encoder's
    last hidden state, L the encoder's maximum length (``max_length`` caps it).

    ``tokenizer``: its folder when it is not ``name``'s (a diffusers pipeline keeps
    ``tokenizer/`` beside ``text_encoder/``). ``attend_padding``: the mask is all True, so the
    network reads the padded positions' embeddings too, as Stable Diffusion-style pipelines
    were trained to."""

    def __init__(self, name: str, *, max_length: int | None = None,
                 device: torch.device | str | None = None, batch_size: int = 64,
                 tokenizer: str | None = None, attend_padding: bool = False):
        tf = _transformers()
        try:
            config = tf.AutoConfig.from_pretrained(name)
            self.tokenizer = tf.AutoTokenizer.from_pretrained(tokenizer or name)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the text encoder {name!r} (a hub id or a folder "
                            f"written by save_pretrained): {str(exc).splitlines()[0]}") from None
        kind = MODEL_TYPES.get(config.model_type)
        if kind is None:
            raise UserError(f"text encoder {name!r} is a {config.model_type!r} model; use a CLIP "
                            f"or T5 text encoder ({', '.join(sorted(set(MODEL_TYPES)))})")
        self.model = getattr(tf, kind).from_pretrained(name).eval().requires_grad_(False)
        self.model.to(device or "cpu")
        limit = getattr(config, "max_position_embeddings", None) or 512
        self.max_length = int(min(max_length or limit, limit))
        self.dim = int(getattr(config, "hidden_size", None) or config.d_model)
        self.name, self.batch_size, self.calls = name, int(batch_size), 0
        self.attend_padding = bool(attend_padding)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _lengths(self, texts: Sequence[str]) -> None:
        for text in texts:
            n = len(self.tokenizer(text)["input_ids"])
            if n > self.max_length:
                raise ConditionError(f"prompt {text[:60]!r} has {n} tokens; the text encoder "
                                     f"{self.name!r} takes at most {self.max_length}")

    @torch.no_grad()
    def _run(self, texts: list[str]) -> None:
        device = next(self.model.parameters()).device
        for i in range(0, len(texts), self.batch_size):
            part = texts[i:i + self.batch_size]
            tok = self.tokenizer(part, padding="max_length", max_length=self.max_length,
                                 truncation=True, return_tensors="pt").to(device)
            hidden = self.model(input_ids=tok["input_ids"],
                                attention_mask=tok["attention_mask"]).last_hidden_state
            self.calls += 1
            masks = tok["attention_mask"].cpu().bool()
            if self.attend_padding:
                masks = torch.ones_like(masks)
            for text, h, m in zip(part, hidden.float().cpu(), masks):
                self._cache[text] = (h, m)

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, L, D)`` embeddings and ``(n, L)`` masks, each distinct text encoded once."""
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        self._lengths(new)
        if new:
            self._run(new)
        pairs = [self._cache[t] for t in texts]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

"""Text for sequence conditions: prompts -> token ids or embeddings, stored with the model.

* :mod:`.tokenizer` — a tokenizer fitted offline on the training captions (Hugging Face's
  ``tokenizers``), kept as JSON in the condition specification and so in ``model.pt``; the
  network's own transformer encodes its token ids, trained with the denoiser;
* :mod:`.pretrained` — a frozen pretrained encoder through ``transformers`` (CLIP or T5 text
  encoders, by hub id or local folder; ``pip install 'omnidiff[text]'``), its embeddings cached
  per caption;
* :mod:`.captions` — :class:`CaptionTable` (a dataset's captions, each encoded once) and
  :func:`folder_captions` (``metadata.jsonl`` or ``.txt`` captions of a folder of files);
* :mod:`.prompts` — :class:`PromptEncoder`, the one object that turns prompts into a
  :class:`~omnidiff.core.conditions.SequenceCond` value for either kind, and
  :func:`text_condition`, which builds both from a data module's training captions.
"""

from omnidiff.text.captions import CaptionTable, folder_captions
from omnidiff.text.prompts import PromptEncoder, encode_prompts, text_condition
from omnidiff.text.tokenizer import fit_tokenizer, tokenize

__all__ = ["CaptionTable", "folder_captions", "PromptEncoder", "encode_prompts", "text_condition",
           "fit_tokenizer", "tokenize"]

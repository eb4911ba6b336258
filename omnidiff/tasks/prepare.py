"""``omnidiff prepare recipe=NAME out=DIR [data.KEY=V ...]``: a recipe's training data as shards
(:mod:`omnidiff.plugins.shards`) that ``omnidiff train recipe=NAME data.stream=DIR`` streams.

Works for every domain, a plugin's included: the data module the recipe builds is asked for
its training dataset, whose items are the sample records. Copy the folder to object storage
(``s3://bucket/digits``) and pass that URL as ``data.stream`` on the cluster.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from omnidiff.core.conditions import cond_spec_of
from omnidiff.errors import ConfigError, DataError, RunFolderError, blamed_on
from omnidiff.model_spec import build_domain
from omnidiff.plugins.data import prepare_data_module
from omnidiff.plugins.shards import need_litdata, write_shards
from omnidiff.tasks.config import domain_data, validate

__all__ = ["prepare"]


def _target(cfg: Any) -> Path:
    """``out=``, checked: given, and not a finished folder unless ``overwrite=true``."""
    if cfg.get("out") in (None, ""):
        raise ConfigError("omnidiff prepare needs out=DIR, the shard folder to write")
    out = Path(str(cfg.out)).expanduser().absolute()
    if out.exists():
        if not cfg.get("overwrite"):
            raise RunFolderError(f"out={out} exists; pick another folder or pass "
                                 "overwrite=true to replace it")
        if not (out / "meta").is_dir() and any(out.iterdir()):
            raise RunFolderError(f"out={out} holds something other than shards; it is not "
                                 "replaced: pick another folder")
    return out


def prepare(cfg: Any) -> tuple[Path, dict[str, Any]]:
    """Write the training data of the composed config ``cfg`` as shards; returns the folder
    and its metadata. Everything is checked before anything is written."""
    validate(cfg)
    need_litdata("omnidiff prepare needs")
    if cfg.get("autoencoder") or cfg.data.get("stream"):
        raise ConfigError("omnidiff prepare writes a recipe's own data: drop autoencoder= "
                          "and data.stream=")
    out = _target(cfg)
    with blamed_on(ConfigError, "data"):
        dm = build_domain(str(cfg.domain)).build_data(**domain_data(cfg))
    with blamed_on(DataError, "data"):
        prepare_data_module(dm)
        dataset = dm.train_dataloader().dataset
    meta = {"domain": str(cfg.domain), "recipe": cfg.get("recipe"),
            "event_shape": list(dm.event_shape), "cond": cond_spec_of(dm).to_dict(),
            "data": domain_data(cfg), "seed": int(cfg.seed),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    t0 = time.perf_counter()
    with tqdm(total=len(dataset), unit="sample", desc="omnidiff prepare",
              dynamic_ncols=True) as bar:
        info = write_shards(dataset, out, meta, seed=int(cfg.seed), progress=bar.update,
                            overwrite=bool(cfg.get("overwrite")))
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return out, info

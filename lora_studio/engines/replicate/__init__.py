"""The Replicate engine: the Engine interface on Replicate's hosted models, and the account behind it.

    engine.py       Kontext and text-to-image requests, the Flux LoRA trainer, LoRA generation
    flight.py       many predictions in flight together, collected as they finish
    predictions.py  one prediction: created in sync mode, waited for, canceled, rate limits ridden out
    client.py       the one client factory, base URL and error translator every call uses
    account.py      the API token, who it is, and the model that receives trained versions
    files.py        the dataset zip uploaded, images and weights downloaded and checked
    logs.py         a training's growing log read for step, progress and loss
"""
from __future__ import annotations

from .account import (TOKEN_KIND, TokenFile, account_models, account_name, clean_token, create_model,
                      current_token, model_exists, model_name)
from .client import DEFAULT_BASE_URL, TOKEN_PAGE, base_url, make_client
from .engine import ReplicateEngine

__all__ = [
    "DEFAULT_BASE_URL", "TOKEN_KIND", "TOKEN_PAGE", "ReplicateEngine", "TokenFile",
    "account_models", "account_name", "base_url", "clean_token", "create_model", "current_token", "make_client",
    "model_exists", "model_name",
]

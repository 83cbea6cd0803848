"""The Replicate engine: the Engine interface on Replicate's hosted models, and the account behind it.

    engine.py   Kontext and text-to-image predictions, the Flux LoRA trainer, LoRA generation
    account.py  the API token, who it is, and the model that receives trained versions
    files.py    the dataset zip uploaded, images and weights downloaded and checked
    logs.py     a training's growing log read for step, progress and loss
"""
from __future__ import annotations

from .account import (TOKEN_KIND, TOKEN_PAGE, TokenFile, account_models, account_name, clean_token,
                      client_for, create_model, current_token, model_exists, model_name)
from .engine import ReplicateEngine

__all__ = [
    "TOKEN_KIND", "TOKEN_PAGE", "ReplicateEngine", "TokenFile", "account_models", "account_name",
    "clean_token", "client_for", "create_model", "current_token", "model_exists", "model_name",
]

"""The Settings page's workflows: which engine and models, local model downloads, the Replicate account.

    engine_setup.py     the engine and models chosen in the page, remembered in workspace/setup.json
    local_models.py     downloads as jobs, the Hugging Face token, a row per model
    model_catalogue.py  the models the page offers, with licence, access and memory mode
    replicate_setup.py  the Replicate token and the model that receives trained versions
"""
from __future__ import annotations

from .engine_setup import ENGINES, EngineChoice, SetupService, check
from .local_models import ModelsService
from .model_catalogue import CAPTIONERS, CATALOGUE
from .replicate_setup import ReplicateSetup

__all__ = ["CAPTIONERS", "CATALOGUE", "ENGINES", "EngineChoice", "ModelsService", "ReplicateSetup", "SetupService", "check"]

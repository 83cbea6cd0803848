"""The LoRAs on FLUX.1-dev's transformer: named peft adapters, and the one hot-swap slot.

Named adapters load once and are weighted per call with `set_adapters`; they are evicted
least-recently-used when their files' total size passes a budget. With hot-swap on (compile), one
slot made when the base loads takes a single LoRA's weights in place, so neither switching LoRAs nor
changing a strength recompiles (engines/lora/hotswap.py); several LoRAs at once fall back to named
adapters. `Running` records what the layers were last set to run, so an unchanged request walks no
layer (~10 ms per call on FLUX.1).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ..base import EngineError, LoraWeight
from ..lora import HOT_SLOT, add_hot_slot, canonical_lora, canonical_rank, inspect_lora, set_hot_weight

CANONICAL_CACHE = 4  # LoRAs kept converted for the hot-swap slot (~100-250 MB each for FLUX.1 at rank 16)


@dataclass(frozen=True)
class LoadedAdapter:
    name: str
    path: Path
    nbytes: int
    mtime: float

    @classmethod
    def on_disk(cls, name: str, lora: LoraWeight) -> "LoadedAdapter":
        path = Path(lora.path)
        if not path.is_file():
            raise EngineError(f"The LoRA file for {lora.name!r} is missing: {path.name}.")
        stat = path.stat()
        return cls(name, path, stat.st_size, stat.st_mtime)

    def same_file(self, other: "LoadedAdapter | None") -> bool:
        """Already loaded from this very file, unchanged since (a retrained LoRA reloads)."""
        return other is not None and other.path == self.path and other.mtime == self.mtime


@dataclass(frozen=True)
class Running:
    """The adapters the LoRA layers were last set to run, at these weights; none means disabled."""

    names: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()


DISABLED = Running()  # LoRA layers off: the base exactly
SLOT = Running((HOT_SLOT,), (1.0,))  # the hot slot runs; its strength is in its scalings (HotSlot.weight)


@dataclass
class HotSlot:
    """The slot's LoRA layers, the file whose weights are in it, and the strength its scalings hold."""

    layers: list
    file: LoadedAdapter | None = None
    weight: float | None = 0.0  # None: unknown (a swap or set_adapters reset the scalings)


def adapter_name(name: str) -> str:
    # peft adapter names become module attribute keys: keep them to [a-z0-9_].
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in name.lower())
    return f"lora_{cleaned}"[:64]


class LoraAdapters:
    """What LoRAs the loaded transformer carries and runs. `reset` is called whenever that transformer
    is new (loaded, or dropped and read again) or gone."""

    def __init__(self, budget_bytes: int, slot_rank: int) -> None:
        self.budget_bytes = budget_bytes
        self.slot_rank = slot_rank
        self.named: "OrderedDict[str, LoadedAdapter]" = OrderedDict()
        self.running: Running | None = None  # None: unknown, set again on the next request
        self.slot: HotSlot | None = None
        self.fused = False  # the transformer's QKV is fused: LoRAs load in the fused form
        self.converted: "OrderedDict[tuple, dict]" = OrderedDict()  # recent LoRAs, ready to swap in (CPU)

    def reset(self, pipe=None, with_slot: bool = False, fused: bool = False) -> None:
        """Nothing of the old LoRAs is on the transformer now; with `with_slot`, an empty hot slot is
        made on `pipe`'s (before any compile) and runs at 0, the base exactly."""
        self.named.clear()
        self.fused = fused
        self.slot, self.running = None, None
        if pipe is not None and with_slot:
            self.slot, self.running = HotSlot(add_hot_slot(pipe, self.slot_rank, fused=fused)), SLOT

    def apply(self, pipe, loras: list[LoraWeight]) -> None:
        """Make exactly these LoRAs (with files) active at these weights; load any that are missing."""
        if not loras:
            self.off(pipe)
            return
        if self.slot is not None and len(loras) == 1 and self._swap_in(pipe, loras[0]):
            self._run_slot(pipe, float(loras[0].weight))
            return
        names = [self._ensure(pipe, lora) for lora in loras]
        wanted = Running(tuple(names), tuple(float(lora.weight) for lora in loras))
        if wanted != self.running:
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=list(wanted.weights))
            self.running = wanted

    def off(self, pipe) -> None:
        """The base exactly: the hot slot at 0, or named adapters disabled."""
        if self.slot is not None and self.slot.layers:
            self._run_slot(pipe, 0.0)
        elif self.named and self.running != DISABLED:
            pipe.disable_lora()
            self.running = DISABLED

    def drop(self, pipe, name: str) -> None:
        adapter = adapter_name(name)
        if adapter in self.named:
            self._delete(pipe, adapter)

    def hot_file(self) -> Path | None:
        return self.slot.file.path if self.slot is not None and self.slot.file else None

    def _named_changed(self) -> None:
        """The set of named adapters changed: set them again next time (a running slot still runs)."""
        if self.running != SLOT:
            self.running = None

    def _run_slot(self, pipe, weight: float) -> None:
        """Run the hot slot at `weight` (0 = the base exactly), set in place so nothing recompiles."""
        if self.running != SLOT:
            pipe.enable_lora()
            pipe.set_adapters([HOT_SLOT], adapter_weights=[1.0])
            self.running, self.slot.weight = SLOT, None
        if weight != self.slot.weight:
            set_hot_weight(self.slot.layers, weight)
            self.slot.weight = weight

    def _ensure(self, pipe, lora: LoraWeight) -> str:
        adapter = adapter_name(lora.name)
        wanted = LoadedAdapter.on_disk(adapter, lora)
        loaded = self.named.get(adapter)
        if wanted.same_file(loaded):
            self.named.move_to_end(adapter)
            return adapter
        if loaded:
            self._delete(pipe, adapter)
        inspect_lora(wanted.path, pipe.transformer)  # refuses SDXL/SD1.5 and shape mismatches in words
        self._evict_for(pipe, wanted.nbytes)
        # From the file, not the converted dict: the file's metadata carries lora_alpha. A fused transformer
        # takes the canonical form, which has that scale baked in.
        source = canonical_lora(pipe, wanted.path, fused=True) if self.fused else str(wanted.path)
        try:
            pipe.load_lora_weights(source, adapter_name=adapter)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise EngineError(f"The LoRA {lora.name!r} does not fit this Flux model: {exc}") from None
        self.named[adapter] = wanted
        self._named_changed()
        return adapter

    def _swap_in(self, pipe, lora: LoraWeight) -> bool:
        """Copy this LoRA's weights into the hot slot; False when it must load as a named adapter instead
        (rank above the slot's, text-encoder or DoRA weights)."""
        wanted = LoadedAdapter.on_disk(HOT_SLOT, lora)
        if wanted.same_file(self.slot.file):
            return True
        key = (wanted.path, wanted.mtime)
        state = self.converted.pop(key, None)
        if state is None:  # first use of this file: check it, convert it
            inspect_lora(wanted.path, pipe.transformer)
            try:
                state = canonical_lora(pipe, wanted.path, fused=self.fused)
            except EngineError:
                if self.fused:
                    raise
                return False
        if canonical_rank(state) > self.slot_rank:
            return False
        self.converted[key] = state  # switching back to a recent LoRA is then a copy only
        while len(self.converted) > CANONICAL_CACHE:
            self.converted.popitem(last=False)
        try:
            pipe.load_lora_weights(state, adapter_name=HOT_SLOT, hotswap=True)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise EngineError(f"The LoRA {lora.name!r} cannot be hot-swapped in: {exc}") from None
        self.slot.file, self.slot.weight = wanted, None  # the swap reset the slot's scalings to 1
        return True

    def _evict_for(self, pipe, incoming: int) -> None:
        used = sum(a.nbytes for a in self.named.values())
        while self.named and used + incoming > self.budget_bytes:
            oldest = next(iter(self.named))
            used -= self.named[oldest].nbytes
            self._delete(pipe, oldest)

    def _delete(self, pipe, adapter: str) -> None:
        pipe.delete_adapters(adapter)
        self.named.pop(adapter, None)
        self._named_changed()

"""The GPU suite's time budget (`--budget SECONDS`): rows run in order of value, and a row whose estimate
does not fit what is left is never started, so a short loan on a GPU still brings the telling rows back.

A lent machine gives 15 minutes in all and 10 per command (../shared/gpu-kit/README.md), and the whole
suite takes far longer. So the suite runs its rows most telling first (FLUX.2 [klein] 4B, the default:
plain diffusers vs ours at 1024², then training memory per mode; the FLUX.1 rows after, since their
34 GB of random weights alone take minutes to write), and before each row asks whether its estimate,
including building a model it is the first to need, fits the seconds left. A row that does not fit is
written in the table as not started, with its estimate, so the table says what stayed unmeasured.

The estimates are H100 seconds for a first run (model load and compile included), set from the
published speeds the goals quote and the sizes the memory planner counts; they are not measured here
(no GPU was lent while writing this). Each is a deliberate overestimate: skipping a row that would have
fit costs less than a command cut at its time limit. `--smoke` runs with no budget unless one is given,
and scales the estimates down to the CPU's tiny sizes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

ESTIMATES = {  # H100 seconds, first run of the row (see the module docstring)
    "weights:klein-4b": 90,  # build 4 B + Qwen3-4B on the GPU in bf16, write 16 GB
    "weights:klein-9b": 180,  # 9 B + Qwen3-8B, 35 GB
    "weights:flux1-dev": 240,  # 12 B + T5-XXL, 34 GB, and the Kontext link
    "klein_generate:plain": 45,
    "klein_generate:ours": 150,  # regional compile of 25 blocks on the first image
    "klein_train": 50,  # one memory mode at 512²: load (quantized where asked), cache, 4 steps
    "klein_train:lowvram": 110,  # blocks travel to the GPU one at a time
    "klein_sheet": 90,
    "generate:plain": 120,
    "generate:ours": 300,
    "switch": 40,
    "sheet": 300,
    "train": 150,  # one FLUX.1 memory mode, both resolutions
    "ablations": 240,
    "scaling": 150,
}


def estimate(kind: str, smoke: bool = False) -> float:
    """The estimate of a row kind ("klein_train:lowvram" falls back to "klein_train"); tiny on --smoke."""
    value = ESTIMATES.get(kind, ESTIMATES.get(kind.split(":", 1)[0], 60))
    return value / 100 if smoke else float(value)


@dataclass
class Budget:
    """Seconds the whole command may take (None: no limit), counted from its start."""

    seconds: float | None
    started: float = field(default_factory=time.monotonic)
    skipped: list[str] = field(default_factory=list)

    def left(self) -> float | None:
        return None if self.seconds is None else self.seconds - (time.monotonic() - self.started)

    def fits(self, seconds: float) -> bool:
        left = self.left()
        return left is None or seconds <= left

    def refusal(self, seconds: float) -> str:
        return (f"not started: needs about {seconds:.0f} s, {max(0.0, self.left() or 0.0):.0f} s of the "
                f"{self.seconds:.0f} s budget were left")

"""What Replicate work costs: one price table, estimates before a job, a meter and a cap during it.

The table has one row per kind of paid call, each with its price, the time it usually takes, where
the price came from and when. Defaults live here; the user's edits live in the workspace
(`replicate_prices.json`), so a price change on Replicate is one edit, not a release.

A `Meter` wraps every paid call of one job: before the call it holds the call's price and refuses
if that would take the job's spending, with every call still running, past its cap
(`SpendingCapReached`, a kind of cancel, so what was made is kept); after it, the hold becomes the
call's count and time, or is given back. Holding first keeps the cap exact when several predictions
start at once. On engines that run here nothing is paid and the meter only passes calls through.
Estimates count the predictions Replicate runs side by side (`parallel`) for their time.
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ..engines.base import EditRequest
from ..jobs import UserError
from ..progress import SpendingCapReached
from ..store import atomic_write_json
from .text import check_plain

FILE_NAME = "replicate_prices.json"
UNITS = ("prediction", "second")
# A row's price stays within these multiples of its built-in price: never $0 (a cap would then allow
# unlimited paid calls) and never so high that every capped job is refused.
LOWEST_SHARE, HIGHEST_TIMES = 0.1, 100
MAX_SECONDS, MAX_FIXED_SECONDS = 3600.0, 86_400.0
MAX_SOURCE, MAX_DATE = 200, 40


@dataclass(frozen=True)
class Price:
    """One kind of paid call. `unit` "prediction": `usd` per call, `seconds` per call.
    `unit` "second": `usd` per billed second, `seconds` per unit of work (a training step) on top
    of `fixed_seconds` per run (start-up, upload, saving)."""

    key: str
    label: str
    model: str
    usd: float
    unit: str
    seconds: float
    fixed_seconds: float = 0.0
    source: str = ""
    date: str = ""

    def seconds_for(self, units: float = 1) -> float:
        return self.seconds * units + self.fixed_seconds if self.unit == "second" else self.seconds * units

    def usd_for(self, units: float = 1) -> float:
        return self.usd * self.seconds_for(units) if self.unit == "second" else self.usd * units

    def at_least(self) -> "Price":
        """This row priced no lower than its floor: what the meter charges, whatever the table says."""
        return replace(self, usd=max(self.usd, lowest_usd(self.key)))


_PAGE = "replicate.com model page, price per output image"
DEFAULT_PRICES: tuple[Price, ...] = (
    Price("kontext", "Kontext edit (one sheet image)", "black-forest-labs/flux-kontext-dev", 0.025,
          "prediction", 8.0, source=_PAGE, date="2025-07"),
    Price("lora", "FLUX image with a LoRA (tester, generate)", "black-forest-labs/flux-dev-lora", 0.032,
          "prediction", 10.0, source=_PAGE, date="2025-07"),
    Price("plain", "FLUX image without a LoRA (tester baseline)", "black-forest-labs/flux-dev", 0.025,
          "prediction", 8.0, source=_PAGE, date="2025-07"),
    Price("trainer", "LoRA training (billed per second on an H100)", "ostris/flux-dev-lora-trainer", 0.001525,
          "second", 1.2, fixed_seconds=150.0,
          source="replicate.com/pricing (gpu-h100); seconds per step from Replicate's '1000 steps in about "
                 "20 minutes' guidance", date="2025-07"),
)


@dataclass(frozen=True)
class Estimate:
    """Expected paid calls, dollars and seconds of one job; `*_max` when retries may add calls."""

    calls: int
    usd: float
    seconds: float
    calls_max: int
    usd_max: float
    seconds_max: float
    what: str
    source: str
    parallel: int = 1  # calls Replicate runs at once, counted in the seconds

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        calls = f"{self.calls} paid call{'s' if self.calls != 1 else ''}"
        at_once = f" with {self.parallel} at once" if self.parallel > 1 and self.calls > 1 else ""
        usd, secs = f"≈ ${self.usd:.2f}", f"about {duration(self.seconds)}{at_once}"
        if self.calls_max > self.calls:
            calls += f" (up to {self.calls_max} with retries)"
            usd += f" (up to ${self.usd_max:.2f})"
            secs += f" (up to {duration(self.seconds_max)})"
        return f"Expected on Replicate: {self.what}: {calls}, {usd}, {secs}. Prices: {self.source}."


class PriceTable:
    """The defaults with the user's saved rows on top."""

    def __init__(self, prices: dict[str, Price]) -> None:
        self.prices = prices

    def __getitem__(self, key: str) -> Price:
        return self.prices[key]

    def rows(self) -> list[Price]:
        return list(self.prices.values())


class CostService:
    def __init__(self, root: Path, paid: bool, parallel: int = 1) -> None:
        self.path = Path(root) / FILE_NAME
        self.paid = paid  # True on Replicate: only then are calls metered and estimates shown
        self.parallel = max(1, int(parallel))  # predictions in flight together (ReplicateSettings.parallel)
        self._lock = threading.Lock()

    # ---- the table ------------------------------------------------------------------------------
    def table(self) -> PriceTable:
        prices = {p.key: p for p in DEFAULT_PRICES}
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8")).get("prices", {})
        except (FileNotFoundError, json.JSONDecodeError, AttributeError):
            saved = {}
        for key, values in saved.items() if isinstance(saved, dict) else ():
            if key in prices and isinstance(values, dict):
                try:
                    prices[key] = _checked(prices[key], values)
                except UserError:
                    continue  # a damaged row falls back to the default
        return PriceTable(prices)

    def verify(self, raw: Any) -> None:
        """Start-up rule for the saved table: known rows, each within the bounds an edit must meet."""
        defaults = {p.key: p for p in DEFAULT_PRICES}
        rows = raw.get("prices") if isinstance(raw, dict) else None
        if not isinstance(rows, dict):
            raise ValueError("no price rows")
        for key, values in rows.items():
            if key not in defaults or not isinstance(values, dict):
                raise ValueError(f"unknown price row {key!r}")
            _checked(defaults[key], values)

    def save(self, rows: list[dict]) -> PriceTable:
        """Rows as the settings table edits them: key plus any of usd, seconds, fixed_seconds, source, date."""
        defaults = {p.key: p for p in DEFAULT_PRICES}
        current = self.table()
        saved = {}
        for row in rows:
            key = str(row.get("key", ""))
            if key not in defaults:
                raise UserError(f"Unknown price row {key!r}; the rows are {', '.join(defaults)}.")
            price = _checked(current[key], row)
            saved[key] = {k: getattr(price, k) for k in ("usd", "seconds", "fixed_seconds", "source", "date")}
        with self._lock:
            atomic_write_json(self.path, {"prices": saved})
        return self.table()

    def reset(self) -> PriceTable:
        self.path.unlink(missing_ok=True)
        return self.table()

    # ---- before a job ---------------------------------------------------------------------------
    def sheet(self, images: int, max_tries: int = 1) -> Estimate | None:
        if not self.paid:
            return None
        return self._estimate(f"{images} sheet image{'s' if images != 1 else ''}",
                              [("kontext", images)], [("kontext", images * max(1, max_tries))],
                              in_turn=max(1, max_tries) if images else 1)

    def training(self, steps: int) -> Estimate | None:
        if not self.paid:
            return None
        price = self.table()["trainer"]
        seconds = price.seconds_for(steps)
        return Estimate(1, price.usd_for(steps), seconds, 1, price.usd_for(steps), seconds,
                        f"a {steps}-step training", _sources([price]))

    def sweep(self, with_lora: int, without: int) -> Estimate | None:
        if not self.paid:
            return None
        parts = [("lora", with_lora), ("plain", without)]
        return self._estimate(f"{with_lora + without} test images", parts, parts)

    def generation(self, with_lora: bool) -> Estimate | None:
        if not self.paid:
            return None
        parts = [("lora" if with_lora else "plain", 1)]
        return self._estimate("1 image", parts, parts)

    def _estimate(self, what: str, low: list[tuple[str, int]], high: list[tuple[str, int]],
                  in_turn: int = 1) -> Estimate:
        """`in_turn`: the most calls one image may need one after another (its identity-gate tries)."""
        table = self.table()

        def total(parts, chain):
            calls = sum(n for _, n in parts)
            serial = sum(table[k].seconds_for(n) for k, n in parts)
            return calls, sum(table[k].usd_for(n) for k, n in parts), self._wall(calls, serial, chain)

        (calls, usd, seconds), (calls_max, usd_max, seconds_max) = total(low, 1), total(high, in_turn)
        used = [table[k] for k, n in low if n]
        return Estimate(calls, usd, seconds, calls_max, usd_max, seconds_max, what, _sources(used), self.parallel)

    def _wall(self, calls: int, serial: float, chain: int) -> float:
        """Wall time of `calls` calls taking `serial` seconds one after another, `parallel` at a time:
        whole rounds of `parallel`, and never less than one image's chain of tries."""
        if calls <= 0:
            return 0.0
        one = serial / calls
        return max(math.ceil(calls / self.parallel), min(chain, calls)) * one

    # ---- during a job ---------------------------------------------------------------------------
    def meter(self, cap_usd: float | None, spent: dict | None = None) -> "Meter":
        """A meter for one job; `spent` carries what a resumed job already paid for."""
        return Meter(self.table(), cap_usd if self.paid else None, self.paid, spent)


@dataclass(frozen=True)
class Hold:
    """The price held for one call that is starting (what `Meter.settle` turns into spending)."""

    price: Price
    usd: float
    units: float


class Meter:
    """Counts one job's paid calls and their time, and stops the job before the cap is passed."""

    def __init__(self, table: PriceTable, cap_usd: float | None, paid: bool, spent: dict | None = None) -> None:
        self.table, self.paid = table, paid
        self.cap = float(cap_usd) if cap_usd else None
        spent = spent or {}
        self.calls = int(spent.get("paid_calls", 0))
        self.usd = float(spent.get("usd", 0.0))
        self.seconds = float(spent.get("measured_s", 0.0))
        self.held = 0.0  # the price of calls running now, counted against the cap
        self.running = 0
        self.stopped = False
        self._lock = threading.Lock()

    def reserve(self, key: str, units: float = 1) -> Hold:
        """Hold one call's price (never below the row's floor) before it starts; raise
        SpendingCapReached if the job's spending plus every hold would pass the cap."""
        price = self.table[key].at_least()
        cost = price.usd_for(units) if self.paid else 0.0
        with self._lock:
            if self.paid and self.cap is not None and self.usd + self.held + cost > self.cap + 1e-9:
                self.stopped = True
                running = f", {self.running} more running" if self.running else ""
                raise SpendingCapReached(
                    f"Stopped at the spending cap: {self.calls} paid call(s) so far ≈ ${self.usd:.2f}{running}; the "
                    f"next one ({self.table[key].label}, ≈ ${cost:.3f}) would pass the cap of ${self.cap:.2f}. "
                    "Everything made so far is kept; start again with a higher cap to go on.")
            self.held += cost
            self.running += 1
        return Hold(price, cost, units)

    def settle(self, hold: Hold, paid: bool, seconds: float, billed: float | None = None) -> None:
        """The held call ended: count it (`paid`) by the table, per call or per billed second (the
        engine's count when it has one, else the measured time), or give its hold back."""
        with self._lock:
            self.held = max(0.0, self.held - hold.usd)
            self.running -= 1
            if not self.paid or not paid:
                return
            self.calls += 1
            self.seconds += seconds
            if hold.price.unit == "second":
                self.usd += hold.price.usd * (seconds if billed is None else billed)
            else:
                self.usd += hold.price.usd_for(hold.units)

    def call(self, key: str, fn: Callable[..., Any], *args, units: float = 1, **kwargs) -> Any:
        """Run one paid call through the cap, then count it and its measured time."""
        if not self.paid:
            return fn(*args, **kwargs)
        hold = self.reserve(key, units)
        started = time.monotonic()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, SpendingCapReached):
                self.stopped = True  # the engine stopped a per-second run at the cap
            # A per-second run stopped or failed part-way was still billed while it ran.
            self.settle(hold, hold.price.unit == "second", time.monotonic() - started, getattr(exc, "billed_s", None))
            raise
        self.settle(hold, True, time.monotonic() - started, getattr(result, "billed_s", None))
        return result

    def seconds_left(self, key: str) -> float | None:
        """Billed seconds the cap still allows for per-second work (None: no limit)."""
        if not self.paid or self.cap is None or self.table[key].unit != "second":
            return None
        return max(0.0, (self.cap - self.usd) / self.table[key].at_least().usd)  # the floor is above 0

    def summary(self) -> dict:
        return {"paid_calls": self.calls, "usd": round(self.usd, 4), "measured_s": round(self.seconds, 2),
                "cap_usd": self.cap, "stopped_at_cap": self.stopped}


class ImageCharges:
    """A meter as a flight of images sees it (engines.flight.Charges): each image is one call of
    its row — a Kontext edit, or a FLUX image with or without a LoRA."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def reserve(self, request) -> Hold:
        return self.meter.reserve(price_key(request))

    def settle(self, hold: Hold, paid: bool, seconds: float) -> None:
        self.meter.settle(hold, paid, seconds)


def price_key(request) -> str:
    """The price row of one image request."""
    if isinstance(request, EditRequest):
        return "kontext"
    return "lora" if request.loras else "plain"


def spending_text(summary: dict | None) -> str:
    """One line for a finished job: measured time, paid calls, approximate spend."""
    if not summary or not summary.get("paid_calls") and not summary.get("stopped_at_cap"):
        return ""
    text = (f"Replicate: {summary['paid_calls']} paid call{'s' if summary['paid_calls'] != 1 else ''}, "
            f"{duration(summary.get('measured_s', 0))} measured, ≈ ${summary.get('usd', 0):.2f} by the price table")
    if summary.get("cap_usd"):
        text += f" (cap ${summary['cap_usd']:.2f}{', reached' if summary.get('stopped_at_cap') else ''})"
    return text + "."


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def parse_cap(value: Any) -> float | None:
    """A spending cap from a form or API: blank or 0 means none."""
    if value in (None, ""):
        return None
    try:
        cap = float(value)
    except (TypeError, ValueError):
        raise UserError(f"The spending cap {value!r} is not a number of dollars.") from None
    if not math.isfinite(cap) or cap < 0 or cap > 10_000:
        raise UserError("The spending cap must be between $0 (no cap) and $10,000.")
    return cap or None


def lowest_usd(key: str) -> float:
    return next(p.usd for p in DEFAULT_PRICES if p.key == key) * LOWEST_SHARE


def _checked(base: Price, values: dict) -> Price:
    """One row as an edit or the file gives it: prices within bounds of the built-in, plain text."""
    builtin = next(p for p in DEFAULT_PRICES if p.key == base.key)
    bounds = {"usd": (lowest_usd(base.key), builtin.usd * HIGHEST_TIMES), "seconds": (0.0, MAX_SECONDS),
              "fixed_seconds": (0.0, MAX_FIXED_SECONDS)}
    changes = {}
    for name, (low, high) in bounds.items():
        if values.get(name) not in (None, ""):
            try:
                number = float(values[name])
            except (TypeError, ValueError, OverflowError):
                raise UserError(f"{base.label}: {name} must be a number.") from None
            if not math.isfinite(number) or not low <= number <= high:
                raise UserError(f"{base.label}: {name} must be a number from {low:g} to {high:g}"
                                + (" (a tenth to a hundred times the built-in price)." if name == "usd" else "."))
            changes[name] = number
    for name, most in (("source", MAX_SOURCE), ("date", MAX_DATE)):
        text = values.get(name)
        if isinstance(text, str):  # an emptied table cell can come back as NaN: that keeps the old text
            changes[name] = check_plain(text, f"{base.label}: {name}", most)
    return replace(base, **changes)


def _sources(prices: list[Price]) -> str:
    seen = dict.fromkeys(f"{p.source} ({p.date})" if p.date else p.source for p in prices if p.source)
    return "; ".join(seen) or "the price table"

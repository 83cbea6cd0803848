"""Strength tester: one prompt, S seeds × K strengths, on the one loaded base, measured.

The first LoRA is swept; any further LoRAs stay at their own weight (a character swept under a
fixed style). A "no LoRA" row of the same seeds is the baseline for "does the LoRA do anything"
and for how varied the base model's outputs are.

On FLUX.2 [klein] the same sweep can run on both checkpoints (`checkpoints=("distilled", "base")`):
the LoRA trains on the base and draws on the distilled one, and whether it keeps its strength there is
not settled upstream (black-forest-labs/flux2 #38), so the tester measures it: one grid and analysis
per checkpoint, identity per strength side by side. The first checkpoint's answer is the LoRA's.
Steps and guidance are each checkpoint's own unless asked (distilled 4 without CFG, base 50 at 4).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from PIL import Image, ImageDraw

from ..engines.base import Engine, GenerateRequest, defaults_of, family_of
from ..engines.flight import open_flight
from ..images import open_image, save_png
from ..jobs import JobQueue, JobReporter, JobView, UserError
from ..progress import Canceled
from ..store import Store
from . import limits
from .characters import Characters
from .costs import CostService, ImageCharges, parse_cap
from .job_params import SweepParams
from .library import LibraryService
from .strength_analysis import (Cell, StrengthRow, SweepAnalysis, analyse, compare_checkpoints, parse_strengths,
                                summarise)

JOB_KIND = "sweep"
DEFAULT_STRENGTHS = (0.0, 0.6, 0.8, 1.0, 1.2)
MAX_EXTRA = 4  # other LoRAs held at a fixed weight
CHECKPOINT_NAMES = ("distilled", "base")  # FLUX.2 [klein]'s (engines/local/model_manager.CHECKPOINTS)


@dataclass(frozen=True)
class SweepRequest:
    lora: str  # name or id of the LoRA to sweep
    prompt: str
    strengths: tuple[float, ...] = DEFAULT_STRENGTHS
    seeds: tuple[int, ...] = (1, 2, 3)
    extra: tuple[tuple[str, float], ...] = ()  # other LoRAs at a fixed weight
    include_base: bool = True
    steps: int | None = None  # None: each checkpoint's own (FLUX.1 28, Klein distilled 4, Klein base 50)
    max_usd: float | None = None  # spending cap on Replicate; None or 0 = none
    checkpoints: tuple[str, ...] = ()  # Klein: e.g. ("distilled", "base"); () = the engine's pictures one


class TesterService:
    def __init__(self, store: Store, jobs: JobQueue, characters: Characters, library: LibraryService,
                 engine: Callable[[], Engine], image_size: int, costs: CostService | None = None,
                 engine_limits: limits.EngineLimits | None = None) -> None:
        self.store, self.jobs, self.characters, self.library = store, jobs, characters, library
        self.costs = costs or CostService(store.root, paid=False)
        self._engine = engine
        self.image_size = image_size
        self.limits = engine_limits or limits.LOCAL
        jobs.register(JOB_KIND, self._run, params=SweepParams)

    def start(self, request: SweepRequest) -> JobView:
        lora = self.library.resolve(request.lora)
        params = self.check(SweepParams(lora_id=lora["id"], prompt=request.prompt, strengths=request.strengths,
                                        seeds=request.seeds, extra=request.extra, include_base=request.include_base,
                                        steps=request.steps, max_usd=parse_cap(request.max_usd),
                                        checkpoints=request.checkpoints))
        engine = self._engine()
        self.library.check_family(lora, family_of(engine))
        extra = tuple((self.library.resolve(name)["id"], weight) for name, weight in params.extra)
        for lora_id, _ in extra:
            self.library.check_family(self.library.get(lora_id), family_of(engine))
        self.check_checkpoints(params.checkpoints, engine)
        params = replace(params, extra=extra)
        estimate = self.estimate(len(params.strengths), len(params.seeds), params.include_base, bool(params.extra))
        if estimate:
            params = replace(params, estimate=estimate.to_dict())
        return self.jobs.submit(JOB_KIND, params, title=f"Strength test · {lora['name']}")

    def check(self, params: SweepParams) -> SweepParams:
        """Every field of a sweep, refused in words before any image is made (also for stored jobs); the
        values may be anything a caller sent, the result holds them typed."""
        prompt = limits.text(params.prompt, "The prompt", limits.MAX_PROMPT, required=True,
                             example="photo of <trigger> in a café")
        strengths = parse_strengths(list(params.strengths or []))
        seeds = limits.parse_seeds(list(params.seeds or []))
        extra = list(params.extra or [])
        if len(extra) > MAX_EXTRA:
            raise UserError(f"{len(extra)} other LoRAs given; hold at most {MAX_EXTRA} at a fixed weight.")
        fixed = []
        for item in extra:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise UserError("Write other LoRAs as name:weight, e.g. film-style:0.5.")
            fixed.append((item[0], parse_strengths([item[1]])[0]))
        steps = None if params.steps is None else limits.whole_number(
            params.steps, "Steps", 1, self.limits.max_inference_steps, 28)
        checkpoints = params.checkpoints or ()
        if not isinstance(checkpoints, (list, tuple)) or len(checkpoints) > 2 or \
                any(c not in CHECKPOINT_NAMES for c in checkpoints) or len(set(checkpoints)) != len(checkpoints):
            raise UserError(f"Checkpoints to sweep are {' and '.join(CHECKPOINT_NAMES)} (FLUX.2 [klein]), each once.")
        # go_fast stays off: on Replicate it would multiply every strength by 1.5 (engines.base).
        return replace(params, prompt=prompt, strengths=tuple(strengths), seeds=tuple(seeds), extra=tuple(fixed),
                       steps=steps, go_fast=False, checkpoints=tuple(checkpoints),
                       include_base=limits.flag(params.include_base, "Include the no-LoRA row"))

    def both_checkpoints(self) -> tuple[str, ...]:
        """FLUX.2 [klein]'s distilled and base checkpoints, pictures first, when this engine has both; else
        refused in words (a FLUX.1 engine, or a Klein without its other flavour on disk)."""
        engine = self._engine()
        offered = tuple(getattr(engine, "checkpoints", lambda: ())())
        if len(offered) < 2:
            raise UserError("A sweep on both checkpoints needs FLUX.2 [klein] with its distilled and base checkpoints "
                            f"on this machine; the engine here runs {family_of(engine).title}"
                            + (f" with the {offered[0]} one only." if offered else "."))
        return offered

    @staticmethod
    def check_checkpoints(checkpoints: tuple[str, ...], engine: Engine) -> None:
        """Each checkpoint asked for is one this engine has (Klein's distilled and base, when both are here)."""
        offered = getattr(engine, "checkpoints", lambda: ())()
        missing = [c for c in checkpoints if c not in offered]
        if missing:
            raise UserError(f"This engine has no {missing[0]} checkpoint to sweep on "
                            + (f"(it has {', '.join(offered)})." if offered else
                               f"({family_of(engine).title} draws with one model)."))

    def estimate(self, strengths: int, seeds: int, include_base: bool = True, extra: bool = False):
        """Expected Replicate cost and time of a sweep (None when nothing is paid)."""
        base = seeds if include_base else 0
        return self.costs.sweep(strengths * seeds + (base if extra else 0), 0 if extra else base)

    def _run(self, params: SweepParams, reporter: JobReporter) -> dict:
        params = self.check(params)
        engine = self._engine()
        meter = self.costs.meter(params.max_usd)
        try:
            return self._sweep(params, reporter, engine, meter)
        finally:
            if meter.paid:
                reporter.output("spending", meter.summary())

    def _sweep(self, params: SweepParams, reporter: JobReporter, engine: Engine, meter) -> dict:
        lora = self.library.get(params.lora_id)
        checkpoints = params.checkpoints or ("",)
        measure = _Measure(self._reference(lora), enabled=not engine.makes_noise)
        total = len(checkpoints) * (len(params.strengths) + bool(params.include_base)) * len(params.seeds)
        progress = _Progress(reporter, total)
        results = {name or "default": self._sweep_on(name, params, lora, engine, meter, measure, progress,
                                                    first=i == 0) for i, name in enumerate(checkpoints)}
        result = dict(next(iter(results.values())))  # the first checkpoint's grid and answer are the LoRA's
        if len(results) > 1:
            result["checkpoints"] = {name: {k: v for k, v in r.items() if k in ("grid", "cells", "analysis", "steps",
                                                                               "guidance")}
                                     for name, r in results.items()}
            result["comparison"] = compare_checkpoints(
                {name: SweepAnalysis(**{**r["analysis"], "rows": [StrengthRow(**row) for row in r["analysis"]["rows"]]})
                 for name, r in results.items()})
            reporter.log(result["comparison"])
        analysis = result["analysis"]
        self.library.set_scores(lora["id"], {"recommended_strength": analysis["recommended"],
                                             "verdict": analysis["verdict"], "reason": analysis["reason"],
                                             **({"comparison": result["comparison"]} if "comparison" in result else {})})
        return result

    def _sweep_on(self, checkpoint: str, params: SweepParams, lora: dict, engine: Engine, meter, measure: "_Measure",
                  progress: "_Progress", first: bool) -> dict:
        """The grid on one checkpoint ("" = the engine's own): its images, cells, analysis and grid file."""
        extra = [self.library.weight(lid, w) for lid, w in params.extra]
        rows: list[float | None] = ([None] if params.include_base else []) + list(params.strengths)
        out_dir = self.store.public_dir("jobs", progress.reporter.job_id, *([] if first else [checkpoint]))
        defaults = defaults_of(engine, checkpoint)
        steps = params.steps or defaults.steps
        seeds = list(params.seeds)
        made: dict[tuple[int, int], tuple[Image.Image, str]] = {}  # (row, seed index) -> image, its file
        failed: list[str] = []
        reason = ""  # the first failure, in words
        on = f" on the {checkpoint} checkpoint" if checkpoint else ""
        with open_flight(engine, ImageCharges(meter), stop=lambda: progress.reporter.cancel_requested) as flight:
            for r, strength in enumerate(rows):
                loras = tuple(extra) if strength is None else (self.library.weight(lora["id"], strength), *extra)
                for s, seed in enumerate(seeds):
                    flight.submit((r, s), GenerateRequest(
                        prompt=params.prompt, seed=seed, width=self.image_size, height=self.image_size,
                        steps=steps, guidance=defaults.guidance, loras=loras, go_fast=params.go_fast,
                        checkpoint=checkpoint))
            progress.start(flight.parallel, on)
            try:
                for done in flight.results():
                    r, s = done.key
                    label = f"strength {'no LoRA' if rows[r] is None else f'{rows[r]:g}'}, seed {seeds[s]}{on}"
                    if done.error:  # this cell alone failed on the engine; the grid goes on without it
                        progress.reporter.log(f"{label}: {done.error}.")
                        failed.append(label)
                        reason = reason or f"{label}: {done.error}"
                    else:
                        name = f"{'base' if rows[r] is None else f's{rows[r]:g}'}_seed{seeds[s]}.png"
                        made[(r, s)] = (done.image, str(save_png(done.image, out_dir / name)))
                    progress.step(f"{label}: {'failed' if done.error else 'done'}")
            except Canceled:  # a stop or the cap: what was made stays with the job, as a partial grid
                cells = self._cells(made, rows, seeds, measure)
                if cells:
                    partial = save_png(_grid(cells, rows, seeds), out_dir / "grid.png")
                    progress.reporter.outputs({"cells": [c.__dict__ for c in cells], "grid": str(partial)})
                raise
        cells = self._cells(made, rows, seeds, measure)
        if not cells:
            raise UserError(f"Every image of the strength test failed on the engine ({reason}).")
        row_stats, base_div = summarise(cells, measure.pixel_paths, measure.face_paths if measure.enabled else None)
        analysis = analyse(row_stats, base_div, has_faces=measure.has_reference)
        grid = save_png(_grid(cells, rows, seeds), out_dir / "grid.png")
        progress.reporter.log(f"{checkpoint.capitalize()} checkpoint: {analysis.reason}" if checkpoint
                              else analysis.reason)
        if failed:
            progress.reporter.log(f"{len(failed)} image(s) failed twice on the engine and are missing from the grid: "
                                  + ", ".join(failed) + ".")
        return {"grid": str(grid), "cells": [c.__dict__ for c in cells], "analysis": analysis.to_dict(),
                "go_fast": params.go_fast, "failed": failed, "steps": steps,
                "guidance": defaults.guidance}

    @staticmethod
    def _cells(made: dict, rows: list, seeds: list[int], measure: "_Measure") -> list[Cell]:
        """The images made, as cells in grid order (row by row), each measured once, its change from
        the no-LoRA image of the same seed when there is one."""
        cells = []
        for (r, s) in sorted(made):
            image, path = made[(r, s)]
            cell = Cell(rows[r], seeds[s], path, identity=measure.observe(path, image))
            base = made.get((0, s)) if rows[0] is None and r > 0 else None
            if base is not None:
                cell.change = measure.pixel(image, base[0])
            cells.append(cell)
        return cells

    def _reference(self, lora: dict):
        if not lora.get("character_id"):
            return None
        try:
            return self.characters.reference_path(lora["character_id"])
        except UserError:
            return None


class _Progress:
    """One progress bar over every checkpoint's cells."""

    def __init__(self, reporter: JobReporter, total: int) -> None:
        self.reporter, self.total, self.done = reporter, total, 0

    def start(self, parallel: int, on: str) -> None:
        self.reporter.progress(self.done / self.total, f"{self.total} images{on}"
                               + (f", {parallel} at once" if parallel > 1 else ""))
        self.reporter.next_images(f"{self.done}/{self.total} images done", 1 / self.total)

    def step(self, text: str) -> None:
        self.done += 1
        self.reporter.progress(self.done / self.total if self.done < self.total else 0.99, text)
        self.reporter.next_images(f"{self.done}/{self.total} images done", 1 / self.total)


class _Measure:
    """Each output is measured once: its face (distance to the reference, descriptor for the
    diversity between seeds) and, always, the image itself for the pixel measures."""

    def __init__(self, reference_path, enabled: bool) -> None:
        from .. import identity

        self.identity_module = identity
        self.reference = None
        self.enabled = enabled
        if enabled and reference_path is not None:
            try:
                self.reference = identity.reference_descriptor(open_image(reference_path))
            except identity.NoFaceError:
                self.reference = None
        self._images: dict[str, Image.Image] = {}
        self._faces: dict[str, object] = {}

    @property
    def has_reference(self) -> bool:
        return self.reference is not None

    def observe(self, path: str, image: Image.Image) -> float | None:
        """Remember this output; return its face distance to the reference (None: unmeasured)."""
        self._images[path] = image
        if not self.enabled:
            return None
        score = self.identity_module.score_image(image, self.reference)
        self._faces[path] = score.descriptor
        return score.distance

    def pixel(self, a: Image.Image, b: Image.Image) -> float:
        return float(self.identity_module.image_similarity(a, b))

    def pixel_paths(self, a: str, b: str) -> float:
        return self.pixel(self._images[a], self._images[b])

    def face_paths(self, a: str, b: str) -> float | None:
        da, db = self._faces.get(a), self._faces.get(b)
        if da is None or db is None:
            return None
        return self.identity_module.face_distance(da, db)


def _grid(cells: list[Cell], rows: list, seeds: list[int]) -> Image.Image:
    """A labelled contact sheet: one row per strength, one column per seed."""
    first = Image.open(cells[0].path)
    side = max(first.width, 96)
    label_w, head = 90, 24
    canvas = Image.new("RGB", (label_w + side * len(seeds), head + side * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for s, seed in enumerate(seeds):
        draw.text((label_w + s * side + 4, 6), f"seed {seed}", fill="black")
    for r, strength in enumerate(rows):
        label = "no LoRA" if strength is None else f"strength {strength:g}"
        draw.text((4, head + r * side + side // 2 - 6), label, fill="black")
    for cell in cells:
        r = rows.index(cell.strength)
        s = seeds.index(cell.seed)
        tile = Image.open(cell.path).convert("RGB").resize((side, side))
        canvas.paste(tile, (label_w + s * side, head + r * side))
        if cell.identity is not None:
            draw.text((label_w + s * side + 3, head + r * side + side - 14), f"d={cell.identity:.2f}",
                      fill="yellow")
    return canvas

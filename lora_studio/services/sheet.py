"""The character sheet: 30 variations of the reference, resumable, identity-gated.

Each is an edit of the one reference image: FLUX.1 Kontext's (its own transformer), or FLUX.2
[klein]'s (the same pipeline, the reference in `image=`); steps and guidance are the engine family's
unless asked (Kontext 28 at 2.5, Klein distilled 4 without CFG, Klein base 50 at 4).

Each finished variation is saved and recorded the moment it exists, so a stopped or crashed job
resumes where it left off. With a real model, a variation whose face is missing or drifts from the
reference is generated again with a new seed (up to `max_tries`); on the tiny engine the images are
noise, so the gate is off and the job says so. The variations go to the engine as one flight
(engines/flight.py): Replicate keeps several predictions running at once, the local engine takes
`edit_batch` edits per call (a speed setting); a gate retry joins the flight as soon as its face is
measured. Each variation keeps its own seed, so the images are those one-by-one calls would give,
and each is stored under its slot whatever order they finish in.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Callable

from ..engines.base import EditRequest, Engine, defaults_of
from ..engines.flight import open_flight
from ..images import open_image, save_png
from ..jobs import JobQueue, JobReporter, JobView, UserError
from ..progress import Canceled
from ..store import Store, new_id
from . import limits
from .characters import STORED_SIDE, Characters
from .costs import CostService, ImageCharges, parse_cap
from .job_params import SheetParams
from .sheet_prompts import SHEET_PROMPTS

JOB_KIND = "sheet"


@dataclass(frozen=True)
class SheetOptions:
    gate: bool = True  # regenerate variations whose face drifts from the reference
    max_tries: int = 3
    max_distance: float = 0.6
    steps: int | None = None  # None: the engine family's sheet steps
    slots: tuple[int, ...] | None = None  # None = all 30
    max_usd: float | None = None  # spending cap on Replicate; None or 0 = none


class SheetService:
    def __init__(self, store: Store, jobs: JobQueue, characters: Characters,
                 engine: Callable[[], Engine], image_size: int,
                 score_sheet: Callable[[str], object] | None = None, costs: CostService | None = None) -> None:
        self.store, self.jobs, self.characters = store, jobs, characters
        self.costs = costs or CostService(store.root, paid=False)
        self._engine = engine
        self._score_sheet = score_sheet  # so the Selection tab opens with faces already measured
        self.image_size = image_size
        self._starting = threading.Lock()
        jobs.register(JOB_KIND, self._run, params=SheetParams)

    def start(self, character_id: str, options: SheetOptions = SheetOptions()) -> JobView:
        character = self.characters.get(character_id)
        self.characters.reference_path(character_id)  # fails early with a message if missing
        params = self.check(SheetParams(character_id=character["id"], gate=options.gate, max_tries=options.max_tries,
                                        max_distance=options.max_distance, steps=options.steps,
                                        slots=tuple(options.slots) if options.slots else None,
                                        max_usd=parse_cap(options.max_usd)))
        estimate = self.estimate(character_id, replace(options, gate=params.gate, max_tries=params.max_tries))
        if estimate:
            params = replace(params, estimate=estimate.to_dict())
        with self._starting:  # two clicks at once start one job, not two
            running = [j for j in self.jobs.list(JOB_KIND) if j.params.get("character_id") == character_id
                       and not j.done]
            if running:
                return running[0]
            job = self.jobs.submit(JOB_KIND, params, title=f"Character sheet · {character['name']}")
        self.store.update("characters", character_id, sheet_job_id=job.id)
        return job

    @staticmethod
    def check(params: SheetParams) -> SheetParams:
        """Tries, steps, gate and slots in range, refused in words (also for jobs stored earlier)."""
        slots = params.slots
        valid = {p.slot for p in SHEET_PROMPTS}
        if slots is not None and (not isinstance(slots, tuple) or not set(slots) <= valid or not slots):
            raise UserError(f"Sheet slots must be numbers from {min(valid)} to {max(valid)}.")
        return replace(params, gate=limits.flag(params.gate, "The identity gate"),
                       max_tries=limits.whole_number(params.max_tries, "Tries per variation", 1, 10, 3),
                       max_distance=limits.number(params.max_distance, "The face distance limit", 0.1, 1.5),
                       steps=None if params.steps is None else limits.whole_number(params.steps, "Steps", 1, 100, 28))

    def estimate(self, character_id: str, options: SheetOptions = SheetOptions()):
        """Expected Replicate cost and time of the images still missing (None when nothing is paid)."""
        wanted = set(options.slots or [p.slot for p in SHEET_PROMPTS])
        todo = len([s for s in self.missing_slots(character_id) if s in wanted])
        return self.costs.sheet(todo, options.max_tries if options.gate else 1)

    def missing_slots(self, character_id: str) -> list[int]:
        done = {r.get("slot") for r in self.store.find("images", character_id=character_id, kind="sheet")}
        return [p.slot for p in SHEET_PROMPTS if p.slot not in done]

    # ---- the job --------------------------------------------------------------------------
    def _run(self, params: SheetParams, reporter: JobReporter) -> dict:
        params = self.check(params)
        character_id = params.character_id
        engine = self._engine()
        defaults = defaults_of(engine)
        steps = params.steps or defaults.sheet_steps
        reference = open_image(self.characters.reference_path(character_id), "The reference image",
                               max_side=STORED_SIDE)
        wanted = set(params.slots or [p.slot for p in SHEET_PROMPTS])
        missing = set(self.missing_slots(character_id))
        todo = [p for p in SHEET_PROMPTS if p.slot in wanted and p.slot in missing]
        gate = params.gate and not engine.makes_noise
        scorer = _IdentityGate(reference, params.max_distance) if gate else None
        if params.gate and engine.makes_noise:
            reporter.log("Identity gate is off: the tiny engine draws noise, there is no face to check.")
        elif scorer and scorer.reference is None:
            reporter.log("Identity gate is off: no face was found in the reference image.")
            scorer = None
        kept = len(wanted) - len(todo)
        if kept:
            reporter.log(f"Resuming: {kept} variations already exist and are kept.")
        retried: dict[str, int] = {}
        failed: list[str] = []
        meter = self.costs.meter(params.max_usd, spent=self._spent(reporter.job_id))
        tries = params.max_tries if scorer else 1
        unsaved: dict[int, _Variation] = {}  # slot -> its variation, until it is saved or given up
        finished = 0

        def request(variation: _Variation) -> EditRequest:
            return EditRequest(image=reference, prompt=variation.prompt.prompt, seed=variation.seed,
                               width=self.image_size, height=self.image_size, steps=steps,
                               guidance=defaults.sheet_guidance)

        with open_flight(engine, ImageCharges(meter), stop=lambda: reporter.cancel_requested) as flight:
            for prompt in todo:  # in sheet order; each is stored under its slot whenever it finishes
                unsaved[prompt.slot] = variation = _Variation(prompt)
                flight.submit(variation, request(variation))
            reporter.progress(0.0, _starting_text(len(todo), flight.parallel))
            reporter.next_images(_done_text(0, len(todo)), 1 / max(1, len(todo)))
            try:  # finished images are saved at once, so a stop or the cap keeps every one
                for done in flight.results():
                    variation = done.key
                    label = variation.prompt.label
                    if done.error:  # this image alone failed on the engine; the others go on
                        reporter.log(f"{label}: {done.error}. The other variations go on.")
                        failed.append(label)
                    else:
                        score = scorer.score(done.image) if scorer else None
                        verdict = scorer.verdict(score) if scorer else None
                        variation.keep_if_better(done.image, score)
                        if verdict is not None and variation.tries < tries:
                            retried[verdict] = retried.get(verdict, 0) + 1
                            reporter.log(f"{label}: {verdict}; trying again with a new seed.")
                            flight.submit(variation.next_try(), request(variation))
                            continue
                        if verdict is not None:
                            reporter.log(f"{label}: {verdict} after {variation.tries} tries; keeping the closest.")
                        image, score, used_seed = variation.best
                        self._save(character_id, variation.prompt, image, used_seed, variation.tries, score)
                    del unsaved[variation.prompt.slot]
                    finished += 1
                    reporter.progress(finished / max(1, len(todo)), _progress_text(variation, finished, len(todo),
                                                                                   failed=bool(done.error)))
                    reporter.next_images(_done_text(finished, len(todo)), 1 / max(1, len(todo)))
            except Canceled:  # a stop or the cap: retries that did not run keep the closest try so far
                for variation in unsaved.values():
                    if variation.best is not None:
                        image, score, used_seed = variation.best
                        self._save(character_id, variation.prompt, image, used_seed, variation.tries - 1, score)
                raise
            finally:
                if meter.paid:
                    reporter.output("spending", meter.summary())
        if self._score_sheet is not None:
            reporter.progress(0.99, "Measuring faces against the reference")
            self._score_sheet(character_id)
        made = len(todo) - len(failed)
        text = f"Done: {made} generated, {kept} kept from before"
        if retried:
            text += "; regenerated " + ", ".join(f"{n}× ({why})" for why, n in retried.items())
        if failed:
            text += (f"; {len(failed)} failed twice on the engine ({', '.join(failed)}): start again to make "
                     f"{'it' if len(failed) == 1 else 'them'}")
        reporter.progress(1.0, "Character sheet complete" if not failed else text)
        reporter.log(text)
        return {"generated": made, "kept": kept, "retried": retried, "failed": failed, "gate": bool(scorer),
                "summary": text}

    def _spent(self, job_id: str) -> dict | None:
        """What this job already paid for before a resume, so the cap covers the whole job."""
        return (self.store.get("jobs", job_id) or {}).get("outputs", {}).get("spending")

    def _save(self, character_id, prompt, image, seed, tries, score) -> None:
        image_id = new_id("img_")
        path = save_png(image, self.store.character_dir(character_id, "sheet") / f"{image_id}.png")
        self.store.insert("images", dict(
            id=image_id, character_id=character_id, kind="sheet", path=self.characters.rel(path),
            slot=prompt.slot, category=prompt.category, label=prompt.label, prompt=prompt.prompt,
            seed=seed, tries=tries, width=image.width, height=image.height,
            score=score.to_dict() if score else None))


class _Variation:
    """One sheet slot on its way: which try it is on and the best image so far (seeds depend only on both)."""

    def __init__(self, prompt) -> None:
        self.prompt = prompt
        self.tries = 1
        self.best = None  # (image, score, seed)

    @property
    def seed(self) -> int:
        return 1000 + self.prompt.slot + 7919 * (self.tries - 1)

    def keep_if_better(self, image, score) -> None:
        if self.best is None or (score and _better(score, self.best[1])):
            self.best = (image, score, self.seed)

    def next_try(self) -> "_Variation":
        self.tries += 1
        return self


def _starting_text(total: int, parallel: int) -> str:
    return f"{total} variations, {parallel} at once" if parallel > 1 and total > 1 else f"{total} variations"


def _done_text(finished: int, total: int) -> str:
    return f"{finished}/{total} variations done"


def _progress_text(variation: _Variation, finished: int, total: int, failed: bool = False) -> str:
    prompt = variation.prompt
    return f"Variation {finished}/{total} {'failed' if failed else 'done'}: {prompt.category} · {prompt.label}"


def _better(a, b) -> bool:
    if b is None or b.distance is None:
        return a.distance is not None
    return a.distance is not None and a.distance < b.distance


class _IdentityGate:
    """Scores a variation against the reference face; says why it should be regenerated."""

    def __init__(self, reference_image, max_distance: float) -> None:
        from .. import identity

        self._identity = identity
        self.max_distance = max_distance
        try:
            self.reference = identity.reference_descriptor(reference_image)
        except identity.NoFaceError:
            self.reference = None

    def score(self, image):
        return self._identity.score_image(image, self.reference)

    def verdict(self, score) -> str | None:
        if not score.face_found:
            return "no face"
        if score.distance is not None and score.distance > self.max_distance:
            return "face drifted from the reference"
        return None

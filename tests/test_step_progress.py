"""Model steps reach the job: progress per step ("step 12/28 · 3.1 s/step · ~40 s left"), a stop at the
next step, the store written a few times a second at most; and records whose process is gone never
block a stop or a resume."""
from __future__ import annotations

import time

import pytest

from lora_studio.job_holders import JobHolder
from lora_studio.jobs import JobQueue
from lora_studio.progress import Canceled, hearing_steps, model_step
from lora_studio.step_clock import StepClock, left_text
from lora_studio.store import Store


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_clock_words_a_pass_and_leaves_out_its_first_step_once_others_are_known():
    clock = FakeClock()
    steps = StepClock(clock)
    assert steps.tick(0, 28) == "step 0/28"
    clock.now += 9.0  # the first step also encodes the prompt
    assert steps.tick(1, 28) == "step 1/28 · 9.0 s/step · ~4 min left"
    clock.now += 3.1
    assert steps.tick(2, 28) == "step 2/28 · 3.1 s/step · ~81 s left"
    clock.now += 0.4
    steps.tick(0, 4)  # the next image: the pace heard so far still counts
    clock.now += 0.5
    assert steps.tick(1, 4) == "step 1/4 · 3.1 s/step · ~9 s left"
    assert left_text(5400) == "1.5 h" and left_text(0.2) == "0 s"


class Recorder:
    def __init__(self, stop_at: int | None = None) -> None:
        self.heard: list[tuple[int, int, int]] = []
        self.stop_at = stop_at

    def step(self, done: int, total: int, images: int = 1) -> None:
        self.heard.append((done, total, images))
        if done == self.stop_at:
            raise Canceled("Canceled by the user.")


def test_steps_are_heard_only_inside_the_block_and_only_on_its_thread():
    import threading

    heard = Recorder()
    model_step(1, 4)  # nobody listens: nothing happens
    with hearing_steps(heard):
        model_step(1, 4, 2)
        other = threading.Thread(target=model_step, args=(2, 4))
        other.start()
        other.join()
    model_step(3, 4)
    assert heard.heard == [(1, 4, 2)]


@pytest.mark.slow  # tiny Flux drawn four times
def test_a_pipeline_call_tells_each_step_and_a_stop_leaves_it_at_once(tiny_pipe):
    from lora_studio.engines.local.steps import draw

    forwards = []
    hook = tiny_pipe.transformer.register_forward_pre_hook(lambda *_: forwards.append(1))
    call = dict(prompt="x", width=32, height=32, num_inference_steps=4, guidance_scale=3.5, max_sequence_length=16)
    try:
        heard = Recorder()
        with hearing_steps(heard):
            draw(tiny_pipe, 1, **call)
        assert heard.heard == [(0, 4, 1), (1, 4, 1), (2, 4, 1), (3, 4, 1), (4, 4, 1)]
        forwards.clear()
        with hearing_steps(Recorder(stop_at=2)), pytest.raises(Canceled):
            draw(tiny_pipe, 1, **call)
        assert len(forwards) == 2  # the third step never ran, nor the VAE
        with hearing_steps(Recorder(stop_at=0)), pytest.raises(Canceled):
            draw(tiny_pipe, 1, **call)  # a stop asked before the call: no step at all
        assert len(forwards) == 2
        assert draw(tiny_pipe, 1, **call).images[0].size == (32, 32)  # the pipeline is whole again
    finally:
        hook.remove()


def test_the_reporter_shows_steps_after_the_services_words_within_each_images_share(tmp_path):
    store = Store(tmp_path)
    queue = JobQueue(store)
    seen: list[tuple[float, str]] = []

    def sheet_like(params, reporter):
        reporter.progress(0.0, "4 variations")
        reporter.next_images("0/4 variations done", 0.25)
        for done in range(5):
            model_step(done, 4, images=2)  # two variations in one call
            reporter.flush()
            record = store.get("jobs", reporter.job_id)
            seen.append((record["progress"], record["message"]))
        reporter.progress(0.5, "Variation 2/4 done")
        return {}

    queue.register("s", sheet_like)
    queue.start()
    try:
        assert queue.wait(queue.submit("s", {}).id, 30).status == "succeeded"
    finally:
        queue.stop()
    assert [p for p, _ in seen] == [0.0, 0.125, 0.25, 0.375, 0.5]
    assert seen[0][1] == "0/4 variations done · step 0/4"
    assert seen[2][1].startswith("0/4 variations done · step 2/4 · ") and "s/step" in seen[2][1]


def test_a_progress_line_queued_before_a_stop_does_not_write_over_stopping(tmp_path):
    """A download blocked in a read keeps its last progress pending (written a moment later); a stop in
    between must still read "Stopping…" in the record (the page and a Ctrl-C'd CLI show it)."""
    import threading

    store = Store(tmp_path)
    queue = JobQueue(store)
    queued, go, seen = threading.Event(), threading.Event(), {}

    def download_like(params, reporter):
        reporter.progress(0.4, "40 MB of 100 MB")
        reporter.flush()
        reporter.progress(0.5, "50 MB of 100 MB")  # pending: within the flush interval
        queued.set()
        go.wait(10)
        reporter.flush()  # the late write lands after the stop
        seen.update(store.get("jobs", reporter.job_id))
        reporter.check_cancel()
        return {}

    queue.register("d", download_like)
    queue.start()
    try:
        job = queue.submit("d", {})
        assert queued.wait(10)
        assert queue.cancel(job.id).message == "Stopping…"
        go.set()
        assert queue.wait(job.id, 30).status == "canceled"
    finally:
        queue.stop()
    assert seen["message"] == "Stopping…" and seen["progress"] == 0.5  # the fraction still moves


def test_a_stop_lands_at_the_next_step_and_fast_steps_write_the_store_a_few_times_a_second(tmp_path):
    store = Store(tmp_path)
    queue = JobQueue(store)
    writes = []
    update = store.update
    store.update = lambda table, doc_id, **fields: (writes.append(time.monotonic()), update(table, doc_id, **fields))
    reached = []

    def generate_like(params, reporter):
        for step in range(1, 100_000):
            model_step(step, 100_000)
            reached.append(step)
            if step == 3000:
                queue.cancel(reporter.job_id)
        return {}

    queue.register("g", generate_like)
    queue.start()
    try:
        job = queue.submit("g", {})
        started = time.monotonic()
        done = queue.wait(job.id, 60)
    finally:
        queue.stop()
    assert done.status == "canceled" and reached[-1] == 3000  # the step after the stop never ran
    seconds = time.monotonic() - started
    during = [t for t in writes if t >= started]
    assert len(during) <= 4 + seconds / 0.25  # claim, a few progress writes, cancel, the end


def test_a_record_whose_process_is_gone_is_stopped_or_taken_over_at_once(tmp_path):
    store = Store(tmp_path)
    queue = JobQueue(store)
    ran = []
    queue.register("w", lambda params, reporter: ran.append(params["n"]) or {})
    queue.start()
    other = JobHolder(tmp_path)  # another live process on the workspace
    other.hold()
    try:
        gone = "0" * 32
        stale = store.insert("jobs", dict(kind="w", title="w", status="running", params={"n": 1}, holder=gone,
                                          logs=[], outputs={}))
        alive = store.insert("jobs", dict(kind="w", title="w", status="running", params={"n": 2},
                                          holder=other.token, logs=[], outputs={}))
        assert queue.orphaned(stale["id"]) and not queue.orphaned(alive["id"])
        assert not queue.held_here(alive["id"])
        assert queue.cancel(stale["id"]).status == "canceled"  # no "Stopping…" that nobody would end
        assert queue.cancel(alive["id"]).message == "Stopping…"  # its own process will see it
        taken = store.insert("jobs", dict(kind="w", title="w", status="running", params={"n": 3}, holder=gone,
                                          logs=[], outputs={}))
        assert queue.wait(queue.resume(taken["id"]).id, 10).status == "succeeded" and ran == [3]
        assert queue.held_here(taken["id"])
    finally:
        other.release()
        queue.stop()

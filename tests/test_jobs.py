import json
import time

import pytest

from lora_studio.jobs import JobQueue, UserError
from lora_studio.progress import Canceled
from lora_studio.store import Store


def make_queue(tmp_path):
    store = Store(tmp_path)
    queue = JobQueue(store)
    return store, queue


def test_runs_in_order_and_persists_everything(tmp_path):
    store, queue = make_queue(tmp_path)
    order = []

    def work(params, reporter):
        order.append(params["n"])
        reporter.log(f"working {params['n']}")
        reporter.metric("loss", 1.0 / (params["n"] + 1), step=params["n"])
        reporter.progress(0.5, "half")
        return {"n": params["n"]}

    queue.register("w", work)
    queue.start()
    jobs = [queue.submit("w", {"n": n}) for n in range(3)]
    views = [queue.wait(j.id, 10) for j in jobs]
    assert order == [0, 1, 2]
    assert all(v.status == "succeeded" for v in views)
    assert views[1].outputs == {"n": 1}
    assert "working 1" in views[1].logs[-1]
    assert queue.get(jobs[2].id, with_metrics=True).metrics["loss"] == [(2, 1 / 3)]
    assert (store.job_dir(jobs[0].id) / "log.txt").read_text().count("working 0") == 1
    queue.stop()


def test_failure_is_recorded_with_reason(tmp_path):
    _, queue = make_queue(tmp_path)
    queue.register("bad", lambda p, r: (_ for _ in ()).throw(UserError("Too few images selected.")))
    queue.register("crash", lambda p, r: 1 / 0)
    queue.start()
    bad = queue.wait(queue.submit("bad", {}).id, 10)
    crash = queue.wait(queue.submit("crash", {}).id, 10)
    assert bad.status == "failed" and bad.error == "Too few images selected."
    assert crash.status == "failed" and "ZeroDivisionError" in crash.error
    queue.stop()


def test_cancel_running_and_queued(tmp_path):
    _, queue = make_queue(tmp_path)

    def slow(params, reporter):
        for _ in range(200):
            reporter.check_cancel()
            time.sleep(0.01)
        return {}

    queue.register("slow", slow)
    queue.start()
    first = queue.submit("slow", {})
    second = queue.submit("slow", {})
    while queue.get(first.id).status != "running":
        time.sleep(0.01)
    queue.cancel(second.id)
    queue.cancel(first.id)
    assert queue.wait(first.id, 10).status == "canceled"
    assert queue.get(second.id).status == "canceled"
    queue.stop()


def test_restart_marks_running_interrupted_and_resume_reruns(tmp_path):
    store = Store(tmp_path)
    job = store.insert("jobs", dict(kind="w", title="w", status="running", progress=0.4, params={"n": 1},
                                    logs=[], outputs={}))
    queued = store.insert("jobs", dict(kind="w", title="w", status="queued", progress=0.0, params={"n": 2},
                                       logs=[], outputs={}))
    queue = JobQueue(store)
    seen = []
    queue.register("w", lambda p, r: seen.append(p["n"]) or {})
    queue.start()
    assert queue.wait(queued["id"], 10).status == "succeeded"
    assert queue.get(job["id"]).status == "interrupted"
    queue.resume(job["id"])
    assert queue.wait(job["id"], 10).status == "succeeded"
    assert sorted(seen) == [1, 2]
    with pytest.raises(UserError):
        queue.resume(job["id"])  # succeeded jobs are not resumable
    queue.stop()


def test_canceled_exception_type(tmp_path):
    _, queue = make_queue(tmp_path)
    queue.register("c", lambda p, r: (_ for _ in ()).throw(Canceled("stop")))
    queue.start()
    assert queue.wait(queue.submit("c", {}).id, 10).status == "canceled"
    queue.stop()


def test_old_quick_jobs_leave_the_live_list_but_still_open_by_id(tmp_path):
    from lora_studio.jobs import QueueLimits
    store = Store(tmp_path)
    queue = JobQueue(store, QueueLimits(listed={"quick": 3}))
    queue.register("quick", lambda p, r: (r.log(f"made {p['n']}"), {"n": p["n"]})[1])
    queue.register("train", lambda p, r: {})
    queue.start()
    trainings = [queue.wait(queue.submit("train", {}).id, 10) for _ in range(4)]
    quick = [queue.wait(queue.submit("quick", {"n": n}).id, 10) for n in range(6)]
    queue.wait_idle(10)
    listed = [j.id for j in queue.list("quick")]
    assert listed == [j.id for j in quick[-3:]]  # the newest stay listed, in order
    assert len(queue.list("train")) == 4  # kinds without a bound are never moved
    first = queue.get(quick[0].id, with_metrics=True)  # moved beside its log, still whole
    assert first.status == "succeeded" and first.outputs == {"n": 0} and "made 0" in first.logs[-1]
    assert (store.job_dir(quick[0].id) / "log.txt").read_text().count("made 0") == 1
    assert len(store.find("jobs")) == 7
    with pytest.raises(Exception, match="No job"):
        queue.get("../../studio")
    queue.stop()
    reopened = JobQueue(Store(tmp_path))  # a restart reads the moved record the same way
    assert reopened.get(quick[1].id).outputs == {"n": 1} and trainings[0].id in [j.id for j in reopened.list()]


def test_a_second_queue_on_the_workspace_leaves_a_live_queues_jobs_alone(tmp_path):
    """The app and a CLI command on one workspace: the CLI's queue neither interrupts the app's running
    job nor runs the app's queued ones (of any kind); all of them finish in the app."""
    import threading

    release, ran = threading.Event(), []

    def worker(where):
        def run(params, reporter):
            ran.append((where, params["n"]))
            if params["n"] == 0:
                release.wait(30)
            return {}
        return run

    app = JobQueue(Store(tmp_path))
    for kind in ("w", "x"):
        app.register(kind, worker("app"))
    app.start()
    jobs = [app.submit("w", {"n": 0}), app.submit("w", {"n": 1}), app.submit("x", {"n": 2})]
    while app.get(jobs[0].id).status != "running":
        time.sleep(0.01)
    cli = JobQueue(Store(tmp_path))
    for kind in ("w", "x"):
        cli.register(kind, worker("cli"))
    cli.start()
    cli.wait_idle(10)
    assert [cli.get(j.id).status for j in jobs] == ["running", "queued", "queued"]
    cli.stop()
    release.set()
    assert [app.wait(j.id, 10).status for j in jobs] == ["succeeded"] * 3
    assert ran == [("app", 0), ("app", 1), ("app", 2)]
    app.stop()


def test_only_jobs_whose_process_is_gone_are_taken_over(tmp_path):
    from lora_studio.job_holders import FOLDER

    store = Store(tmp_path)
    dead = "0" * 32  # a process that died and left its lock file behind (unlocked)
    (tmp_path / "jobs" / FOLDER).mkdir(parents=True)
    (tmp_path / "jobs" / FOLDER / f"{dead}.lock").write_text("1\n")
    running = store.insert("jobs", dict(kind="w", status="running", params={"n": 1}, holder=dead))
    queued = store.insert("jobs", dict(kind="w", status="queued", params={"n": 2}, holder="f" * 32))  # no file
    queue = JobQueue(store)
    seen = []
    queue.register("w", lambda p, r: seen.append(p["n"]) or {})
    queue.start()
    assert queue.wait(queued["id"], 10).status == "succeeded" and seen == [2]
    assert queue.get(running["id"]).status == "interrupted"
    assert not (tmp_path / "jobs" / FOLDER / f"{dead}.lock").exists()
    assert store.get("jobs", queued["id"])["holder"] == queue.holder.token
    queue.stop()
    assert list((tmp_path / "jobs" / FOLDER).iterdir()) == []  # a clean stop leaves no lock behind


def test_a_huge_log_line_and_server_paths_never_reach_the_record(tmp_path):
    """A 3 MB log event (a worker may send one) is cut in the record, which studio.json rewrites whole on
    every update; the paths in logs, messages and errors are named by what they are."""
    from lora_studio.job_reporter import FILE_LINE_CHARS, LINE_CHARS

    store, queue = make_queue(tmp_path)
    root = store.root

    def chatty(params, reporter):
        job = store.job_dir(reporter.job_id)
        reporter.log("x" * 3_000_000)
        reporter.log(f"Caching latents under {job / 'cache'}; saved {job / 'output' / 'lora.safetensors'}.")
        reporter.progress(0.5, f"reading {root / 'datasets' / 'abc123' / '0.png'}")
        raise UserError(f"the data set folder {root / 'datasets' / 'abc123'} does not exist; see /srv/secret/x.txt")

    queue.register("chatty", chatty)
    queue.start()
    done = queue.wait(queue.submit("chatty", {}).id, 30)
    assert done.status == "failed"
    assert all(len(line) <= LINE_CHARS + 100 for line in done.logs) and "more characters" in done.logs[0]
    assert (tmp_path / "studio.json").stat().st_size < 100_000
    assert len((store.job_dir(done.id) / "log.txt").read_text()) < FILE_LINE_CHARS + 10_000
    words = json.dumps([done.logs, done.message, done.error])
    assert str(root) not in words and "/srv/secret" not in words
    assert "the job's cache" in words and "lora.safetensors in the job's output folder" in words
    assert "abc123 in the data sets folder" in done.error and "x.txt" in done.error
    queue.stop()

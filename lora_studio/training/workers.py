"""Run a training in worker processes and follow it from the app: launch, tail, stop, and word failures.

The launcher is Accelerate's own where it fits:
- several GPUs: `accelerate launch --multi_gpu --num_processes N --gpu_ids …` (or `--config_file` for the
  two-machine set-up in the README). It starts one process per GPU through torch's elastic agent and
  sets the environment `Accelerator()` reads, so the worker is plain Accelerate code.
- several CPU processes (tests, benchmarks): `python -m torch.distributed.run --standalone`. On this
  Accelerate version `accelerate launch --cpu --num_processes 2` starts one process and `--multi_cpu`
  is no flag, while torchrun gives the same gloo ranks `accelerate launch --multi_gpu` gives NCCL ones:
  the worker code cannot tell them apart. `--standalone` picks a free port, so runs never collide.
- one process ("isolated", or one GPU): the worker alone, `python -m lora_studio.training.worker`;
  a launcher would only add a second process to watch.
`notebook_launcher`/`debug_launcher` fork from the calling process: a crash there is the app's crash,
which is exactly what worker processes are for, so they are not used.

The app's job thread runs `train_in_workers`: it writes `worker/spec.json`, starts the launcher in its
own session, replays the events file into the job's reporter, and ends the run in one of four ways:
a result; a stop (the user: a `cancel` file, then every process killed by id after a grace period);
a failure some rank wrote down (out of memory, a bad setting); or a death without a word (SIGKILL, a
segfault, a heartbeat gone silent), worded from the exit status. Every path ends with each launcher
and rank process killed by its id, so none outlives the job; checkpoints already saved stay on disk.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..engines.base import EngineError, OutOfMemory, TrainRequest, TrainResult
from ..progress import Canceled, Reporter
from ..store import atomic_write_json
from ..typed_json import from_json, to_json
from . import checkpoints as ckpt
from .worker_events import CANCEL, EVENTS, HEARTBEAT, PIDS, REPLAYED, SPEC, EventTail, read_pids

WORKER_MODULE = "lora_studio.training.worker"
POLL_SECONDS = 0.2
FAULT_ENV = "LORA_STUDIO_WORKER_FAULT"  # test hook, e.g. "oom@2" or "oom@2:1" (step 2, rank 1)
HEARTBEAT_ENV = "LORA_STUDIO_WORKER_HEARTBEAT"  # seconds of silence before the workers count as hung
ACCELERATE_CONFIG_ENV = "LORA_STUDIO_ACCELERATE_CONFIG"  # an `accelerate config` file (several machines)
STARTUP_SECONDS = 300.0  # more silence allowed before the first beat: importing torch and diffusers
ROOT = Path(__file__).resolve().parents[2]
SIGNALS = {signal.SIGKILL: "SIGKILL: the system's out-of-memory killer or a kill -9",
           signal.SIGSEGV: "a segmentation fault, often a GPU kernel or a quantization library",
           signal.SIGABRT: "an abort inside a library", signal.SIGTERM: "SIGTERM: someone stopped it",
           signal.SIGBUS: "a bus error (memory mapping)"}


@dataclass(frozen=True)
class WorkerPlan:
    """How many processes, on what: the resolved form of a TrainPlacement."""

    processes: int
    device: str  # "cpu" | "cuda"
    gpu_ids: tuple[int, ...] = ()
    accelerate_config: str | None = None  # an `accelerate config` file (several machines)
    heartbeat_s: float = 900.0  # a worker silent this long is hung (loading FLUX.1 can take minutes)
    grace_s: float = 60.0  # how long a stop waits for the checkpoint before killing

    def describe(self) -> str:
        where = (f"GPU{'s' if len(self.gpu_ids) > 1 else ''} {', '.join(map(str, self.gpu_ids))}"
                 if self.device == "cuda" else "the CPU")
        return f"{self.processes} worker process{'es' if self.processes > 1 else ''} on {where}"


def resolve_plan(kind: str, gpus: tuple[int, ...] | None, cpu_processes: int, app_device: str) -> WorkerPlan:
    """A placement ("isolated"/"workers") made concrete on this machine; EngineError in words if it cannot be."""
    import torch

    heartbeat = float(os.environ.get(HEARTBEAT_ENV) or WorkerPlan.heartbeat_s)
    config = os.environ.get(ACCELERATE_CONFIG_ENV) or None
    if kind == "isolated":
        if str(app_device).startswith("cuda"):
            index = torch.device(app_device).index or 0
            return WorkerPlan(1, "cuda", (index,), heartbeat_s=heartbeat)
        return WorkerPlan(1, "cpu", heartbeat_s=heartbeat)
    if cpu_processes:
        return WorkerPlan(cpu_processes, "cpu", heartbeat_s=heartbeat)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise EngineError("Training on GPUs in worker processes needs NVIDIA GPUs, and none is visible here. "
                          "Train in the app's process (--train-gpus off) instead.")
    ids = tuple(range(count)) if gpus is None else gpus
    missing = [i for i in ids if i >= count]
    if missing:
        raise EngineError(f"GPU {missing[0]} does not exist here: this machine shows {count} GPU(s), "
                          f"numbered 0 to {count - 1}.")
    return WorkerPlan(len(ids), "cuda", ids, accelerate_config=config, heartbeat_s=heartbeat)


def config_processes(path: str) -> int | None:
    """`num_processes` of an `accelerate config` file: every process on every machine."""
    try:
        import yaml

        value = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("num_processes")
        return int(value) if value else None
    except (OSError, ValueError, TypeError, AttributeError, ImportError):
        return None


def launch_command(plan: WorkerPlan, job_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The launcher's command line and environment (see the module docstring for the choice)."""
    worker = ["-m", WORKER_MODULE, "--job-dir", str(job_dir)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env.pop("SPACES_ZERO_GPU", None)  # a worker is a plain process, never a ZeroGPU call
    python = [sys.executable]
    if plan.processes == 1:
        if plan.device == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, plan.gpu_ids))
        return [*python, *worker], env
    if plan.device == "cpu":
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // plan.processes))
        return [*python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(plan.processes),
                *worker], env
    launch = [*python, "-m", "accelerate.commands.launch"]
    if plan.accelerate_config:
        return [*launch, "--config_file", plan.accelerate_config, *worker], env
    return [*launch, "--multi_gpu", "--num_machines", "1", "--num_processes", str(plan.processes),
            "--gpu_ids", ",".join(map(str, plan.gpu_ids)), "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), *worker], env


def parse_fault(text: str | None) -> dict | None:
    """LORA_STUDIO_WORKER_FAULT="kind@step[:rank]" (tests only) as the worker spec's fault hook."""
    match = re.fullmatch(r"(oom|hang|exit)@(\d+)(?::(\d+))?", (text or "").strip())
    if not match:
        return None
    return {"kind": match.group(1), "step": int(match.group(2)), "rank": int(match.group(3) or 0)}


def train_in_workers(plan: WorkerPlan, request: TrainRequest, reporter: Reporter, *, model: str,
                     memory_mode: str, reference: str | None = None, second_model: str | None = None) -> TrainResult:
    """Train `request` in worker processes, following it as the job's own run (see the module docstring)."""
    job_dir = Path(request.work_dir)
    folder = job_dir / "worker"
    _stop_leftovers(folder)  # a launch of this job from before an app restart must not write beside this one
    _fresh(folder)
    atomic_write_json(folder / SPEC, dict(
        request=to_json(request), model=model, second_model=second_model, memory_mode=memory_mode,
        device=plan.device,
        reference=reference, fault=parse_fault(os.environ.get(FAULT_ENV)), app_pid=os.getpid()))
    argv, env = launch_command(plan, job_dir)
    reporter.log(f"Training in {plan.describe()} (each loads the model itself); the app keeps serving.")
    run = _Run(plan, folder, reporter)
    with open(folder / "launcher.log", "ab") as log:
        run.proc = subprocess.Popen(argv, env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        (folder / PIDS).mkdir(exist_ok=True)
        (folder / PIDS / "launcher").write_text(str(run.proc.pid), encoding="utf-8")
        try:
            run.follow()
        finally:
            run.stop_all()
    return run.outcome(request)


class _Run:
    """One launch being followed: its events, its stop request, its heartbeat and its end."""

    def __init__(self, plan: WorkerPlan, folder: Path, reporter: Reporter) -> None:
        self.plan, self.folder, self.reporter = plan, folder, reporter
        self.tail = EventTail(folder)
        self.proc: subprocess.Popen | None = None
        self.result: dict | None = None
        self.canceled = False
        self.stop_sent: float | None = None
        self.failures: list[dict] = []
        self.hung: float | None = None
        self.step = 0
        self.started = time.monotonic()

    def follow(self) -> None:
        while True:
            self.drain()
            if self.proc.poll() is not None:
                self.drain()
                return
            now = time.monotonic()
            if self.stop_sent is None and self.reporter.cancel_requested:
                (self.folder / CANCEL).touch()
                self.stop_sent = now
            if self.stop_sent is not None and now - self.stop_sent > self.plan.grace_s:
                return  # the checkpoint had its time: stop_all kills what is left
            last = _mtime_monotonic(self.folder / HEARTBEAT)
            silent = now - (last if last else self.started)
            if silent > self.plan.heartbeat_s + (0 if last else STARTUP_SECONDS):
                self.hung = silent
                return
            time.sleep(POLL_SECONDS)

    def drain(self) -> None:
        for event in self.tail.read():
            kind, args = event["kind"], event.get("args") or []
            if kind in REPLAYED:
                if kind == "metric" and len(args) == 3 and args[0] == "loss" and isinstance(args[2], int):
                    self.step = args[2]
                getattr(self.reporter, kind)(*args)
            elif kind == "result":
                self.result = event.get("result")
            elif kind == "canceled":
                self.canceled = True
            elif kind == "failed":
                self.failures.append(event)

    def stop_all(self) -> None:
        """Kill the launcher's session and every rank by its id (ranks run in sessions of their own)."""
        targets = [self.proc.pid] if self.proc is not None else []
        targets += list(read_pids(self.folder).values())
        for pid in targets:
            _kill_tree(pid)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass

    def outcome(self, request: TrainRequest) -> TrainResult:
        if self.result is not None:
            return from_json(TrainResult, self.result, "The training workers' result")
        if self.canceled or self.stop_sent is not None:
            raise Canceled("Canceled by the user." + self._kept(request, " "))
        where = f" at step {self.step + 1} of {request.steps}" if self.step else " before its first step"
        if self.hung is not None:
            raise EngineError(f"The training workers stopped answering{where}: no word for {self.hung:.0f} s, "
                              f"so they were stopped.{self._kept(request, ' ')} The app kept serving.")
        ordered = sorted(self.failures, key=lambda f: f.get("error_type") not in ("OutOfMemory", "OutOfMemoryError"))
        for failure in ordered:  # out of memory first: another rank's failure is often its echo
            message = str(failure.get("message") or "it failed")
            if failure.get("error_type") == "OutOfMemory":
                raise OutOfMemory(message)
            if failure.get("error_type") == "OutOfMemoryError":
                raise OutOfMemory(f"Out of memory in worker {failure.get('rank', 0)}{where}: {message}."
                                  f"{self._kept(request, ' ')}")
        death = self._death()
        if death.startswith("killed") or not ordered:  # a signal is the cause; the others lost their peer
            raise EngineError(f"A training worker process died{where} ({death}).{self._kept(request, ' ')} "
                              "The app kept serving.")
        failure = ordered[0]
        message = str(failure.get("message") or "it failed")
        if failure.get("error_type") in ("EngineError", "UserError", "InvalidInput"):
            raise EngineError(message)
        raise EngineError(f"Training worker {failure.get('rank', 0)} failed{where}: {message}."
                          f"{self._kept(request, ' ')} The app kept serving.")

    def _death(self) -> str:
        codes = []
        try:
            text = (self.folder / "launcher.log").read_text(encoding="utf-8", errors="replace")[-20000:]
            text = text[text.rfind("Root Cause"):] if "Root Cause" in text else text  # torchrun's first failure
            codes = [int(c) for c in re.findall(r"exitcode\s*:\s*(-?\d+)", text)]
        except OSError:
            pass
        code = next((c for c in codes if c < 0), codes[0] if codes else None)
        if code is None and self.proc is not None:
            code = self.proc.returncode
        if code is not None and code < 0:
            number = -code
            try:
                name = SIGNALS.get(signal.Signals(number), signal.Signals(number).name)
            except ValueError:
                name = f"signal {number}"
            return f"killed by signal {number}, {name}"
        return f"exit status {code}" if code is not None else "no exit status"

    @staticmethod
    def _kept(request: TrainRequest, lead: str) -> str:
        saved = [step for step, _ in ckpt.list_checkpoints(Path(request.work_dir) / "checkpoints")]
        if not saved:
            return lead + "No checkpoint had been saved yet."
        return lead + f"Checkpoints up to step {saved[-1]} are kept: Resume continues from there."


def _stop_leftovers(folder: Path) -> None:
    pids = list(read_pids(folder).values())
    try:
        pids.append(int((folder / PIDS / "launcher").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass
    for pid in pids:
        _kill_tree(pid)


def _fresh(folder: Path) -> None:
    """A clean worker folder for this launch (the last launch's events and stop request are spent)."""
    for name in (EVENTS, HEARTBEAT, CANCEL, "launcher.log"):
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / PIDS, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


def _mtime_monotonic(path: Path) -> float:
    try:
        return time.monotonic() - (time.time() - path.stat().st_mtime)
    except OSError:
        return 0.0


def _kill_tree(pid: int) -> None:
    """SIGKILL a process we started, and its session when it leads one; gone already is fine."""
    if not _ours(pid):
        return
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _ours(pid: int) -> bool:
    """The pid still names one of our launchers or workers (not a stranger that reused the number)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): the pid was ours moments ago
    return WORKER_MODULE.encode() in cmdline


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

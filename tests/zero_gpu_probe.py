"""Run in a subprocess by tests/test_spaces.py: what gpu_calls does with `spaces` absent or on ZeroGPU.

    python -m tests.zero_gpu_probe absent    # sys.modules['spaces'] = None
    python -m tests.zero_gpu_probe zerogpu   # the real spaces package in ZeroGPU mode

ZeroGPU mode is the real `spaces` code path: SPACES_ZERO_GPU=true and a device API that this
module serves on 127.0.0.1 (it answers /schedule, /allow and /release like Hugging Face's and
records the durations asked for), so each GPU call forks a real ZeroGPU worker process. `spaces`
patches a CUDA build of torch in that mode and refuses the CPU build, so torch is hidden here: the
engine below is a stand-in that needs none (tests/test_spaces.py runs the tiny Flux in forked
workers separately). Prints one JSON document.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

SCHEDULED: list[int] = []


class FakeDeviceApi(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        body = b""
        if url.path == "/schedule":
            SCHEDULED.append(int(parse_qs(url.query)["durationSeconds"][0]))
            body = json.dumps({"idle": True, "nvidiaIndex": 0, "nvidiaUUID": "GPU-probe",
                               "allowToken": f"token-{len(SCHEDULED)}"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class StandInEngine:
    """Answers with the process it ran in, so the probe sees where each call happened."""

    name = "stand-in"
    makes_noise = True
    manager = "a model manager"  # an engine that runs models here (not a remote one)

    def describe(self) -> str:
        return f"stand-in engine in process {os.getpid()}"

    def edit(self, request):
        from lora_studio.engines.base import EngineError

        if request.prompt == "fail":
            raise EngineError("The LoRA file for 'mila' is missing: lora.safetensors.")
        return {"pid": os.getpid(), "prompt": request.prompt, "size": request.image.size}

    def generate(self, request):
        return {"pid": os.getpid(), "prompt": request.prompt}


def main(mode: str) -> dict:
    os.environ["SPACES_ZERO_GPU"] = "true"
    if mode == "absent":
        sys.modules["spaces"] = None  # as if it were not installed
    else:
        server = ThreadingHTTPServer(("127.0.0.1", 0), FakeDeviceApi)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        os.environ["SPACES_ZERO_DEVICE_API_URL"] = f"http://127.0.0.1:{server.server_port}"
        sys.modules["torch"] = None
    from PIL import Image

    from lora_studio import gpu_calls
    from lora_studio.engines.base import EditRequest, EngineError, GenerateRequest, TrainRequest
    from lora_studio.progress import NullReporter

    plain = StandInEngine()
    engine = gpu_calls.for_engine(plain)
    out: dict = dict(parent_pid=os.getpid(), report=gpu_calls.report(), active=gpu_calls.zero_gpu_active(),
                     wrapped=engine is not plain, note_tiny=gpu_calls.banner_note("tiny"),
                     note_replicate=gpu_calls.banner_note("replicate"))
    out["spaces_wrappers"] = {name: getattr(e.function, "__wrapped__", None) is e.plain
                              for name, e in gpu_calls.entry_points().items()}
    edit = EditRequest(image=Image.new("RGB", (16, 16)), prompt="smiling", width=1024, height=1024, steps=28)
    generate = GenerateRequest(prompt="at the beach", width=512, height=512, steps=20)
    out["edit"] = engine.edit(edit)
    out["generate"] = engine.generate(generate)
    out["describe"] = engine.describe()
    try:
        engine.edit(EditRequest(image=Image.new("RGB", (16, 16)), prompt="fail"))
    except EngineError as exc:
        out["error"] = str(exc)
    out["expected"] = [gpu_calls.engine_call_seconds("k", "edit", (edit,), {}),
                       gpu_calls.engine_call_seconds("k", "generate", (generate,), {})]
    if mode == "zerogpu":
        train = TrainRequest(dataset_dir=Path("data"), output_dir=Path("out"), work_dir=Path("work"),
                             trigger="mila_v1", steps=1000, resolution=1024, sample_every=250)
        try:  # the worker cannot train without torch; the call is scheduled all the same
            gpu_calls.train(engine, train, NullReporter())
        except Exception as exc:  # noqa: BLE001
            out["train_error"] = f"{type(exc).__name__}: {exc}"
        chunk = gpu_calls.chunk_steps(train)
        out["train_chunk_steps"] = chunk
        out["expected"].append(gpu_calls.train_chunk_seconds("k", gpu_calls.replace(train, stop_after=chunk), None))
    out["scheduled"] = SCHEDULED
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), default=str))

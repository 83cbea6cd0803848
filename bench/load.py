"""N people on one link at once: concurrent clients on /toggle_image and /generate against a tiny-engine
app this script starts itself, on 127.0.0.1 only.

Each client clicks its own share of one character's sheet (so the final selection is known) and asks
for images; the script counts requests served, errors (goal: none), lost updates (clicks the final
selection does not show; goal: none) and the 95th-percentile wait (a click's round trip; an image
from request to file). The last line is `errors: N`.

    python bench/load.py                       # 4 clients x (5 clicks + 1 image)
    python bench/load.py --clients 8 --clicks 3 --images 1
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_CLIENTS = 16  # a load test for a shared link, not a flood
SHEET = 30


def start_app(workspace: Path, concurrency: int):
    """The real app (same launch arguments as launch.py), on a free loopback port."""
    import socket

    from lora_studio.config import Settings
    from lora_studio.studio import Studio
    from lora_studio.ui.app import build_app, launch_kwargs

    studio = Studio(Settings(workspace=workspace))
    demo = build_app(studio)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.queue(default_concurrency_limit=concurrency).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs(studio))
    return studio, demo, f"http://127.0.0.1:{port}/"


def make_sheet(studio) -> tuple[str, list[str]]:
    """A character with a 30-image sheet, written as the sheet job writes it (Kontext itself is not
    what this measures)."""
    import numpy as np
    from PIL import Image

    from lora_studio.services.sheet_prompts import SHEET_PROMPTS

    character = studio.characters.create("Load")
    rng = np.random.default_rng(0)
    reference = Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    studio.characters.add_images(character["id"], [reference], ["reference.png"])
    for prompt in SHEET_PROMPTS:
        image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        studio.sheet._save(character["id"], prompt, image, 1000 + prompt.slot, 1, None)
    return character["id"], [i.id for i in studio.characters.images(character["id"], "sheet")]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help=f"parallel clients (1-{MAX_CLIENTS})")
    parser.add_argument("--clicks", type=int, default=5, help="/toggle_image calls per client")
    parser.add_argument("--images", type=int, default=1, help="/generate jobs per client")
    parser.add_argument("--concurrency", type=int, default=4, help="Gradio's default_concurrency_limit (launch.py: 4)")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be from 1 to {MAX_CLIENTS}")
    if args.clients * args.clicks > SHEET or args.clicks < 0 or not 0 <= args.images <= 4:
        parser.error(f"clients x clicks must fit one sheet ({SHEET}); --images from 0 to 4")

    from gradio_client import Client

    with tempfile.TemporaryDirectory(prefix="lora-studio-load-") as tmp:
        studio, demo, url = start_app(Path(tmp) / "ws", args.concurrency)
        try:
            character_id, sheet = make_sheet(studio)
            loaded = time.perf_counter()
            if args.images:
                studio.engine().manager.text_to_image()  # the model loads once, before the clock starts
            load_seconds = time.perf_counter() - loaded
            clients = [Client(url, verbose=False) for _ in range(args.clients)]
            clicks, images, errors, refused = [], [], [], []
            lock = threading.Lock()

            def one_client(k: int) -> None:
                client = clients[k]
                mine = sheet[k * args.clicks:(k + 1) * args.clicks]
                jobs = []
                for n in range(max(len(mine), args.images)):
                    if n < len(mine):
                        started = time.perf_counter()
                        try:
                            client.predict(character_id, mine[n], api_name="/toggle_image")
                            with lock:
                                clicks.append(time.perf_counter() - started)
                        except Exception as exc:  # noqa: BLE001 - counted, this is what we measure
                            with lock:
                                errors.append(f"toggle: {exc}")
                    if n < args.images:
                        try:
                            job = client.predict(f"load test {k}-{n}", "", 1000 * k + n, "", api_name="/generate")
                            jobs.append((job["id"], time.perf_counter()))
                        except Exception as exc:  # noqa: BLE001
                            with lock:
                                (refused if "already waiting" in str(exc) else errors).append(f"generate: {exc}")
                for job_id, started in jobs:
                    while True:
                        job = client.predict(job_id, api_name="/job_status")
                        if job["done"]:
                            break
                        time.sleep(0.1)
                    with lock:
                        if job["status"] == "succeeded" and (studio.store.root / job["outputs"]["image"]).is_file():
                            images.append(time.perf_counter() - started)
                        else:
                            errors.append(f"generate {job_id}: {job['status']} {job['error']}")

            started = time.perf_counter()
            threads = [threading.Thread(target=one_client, args=(k,)) for k in range(args.clients)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            elapsed = time.perf_counter() - started
            expected = set(sheet[:args.clients * args.clicks])
            selected = set(studio.characters.get(character_id)["selected"])
            lost = len(expected - selected) + len(selected - expected)
        finally:
            demo.close()
            studio.close()

    print(f"clients: {args.clients} (Gradio concurrency {args.concurrency}), {elapsed:.1f} s in all "
          f"(model loaded beforehand in {load_seconds:.1f} s)")
    print(f"/toggle_image: {len(clicks)}/{args.clients * args.clicks} served, "
          f"p95 wait {percentile(clicks, 0.95):.3f} s, median {percentile(clicks, 0.5):.3f} s")
    print(f"/generate: {len(images)}/{args.clients * args.images} images, p95 wait {percentile(images, 0.95):.2f} s "
          f"(request to file, one worker in turn), median {percentile(images, 0.5):.2f} s")
    if refused:
        print(f"refused by the queue limit (by design, not errors): {len(refused)}")
    print(f"lost updates: {lost}")
    for line in errors[:10]:
        print(f"  {line[:200]}")
    print(f"errors: {len(errors) + lost}")
    return 0 if not errors and not lost else 1


if __name__ == "__main__":
    sys.exit(main())

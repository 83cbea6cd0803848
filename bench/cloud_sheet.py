"""The 30-variation character sheet on Replicate: N predictions in flight vs. one at a time.

Runs the app's own sheet job on the Replicate engine against the fake Replicate API of the tests
(tests/fake_replicate.py, on 127.0.0.1), whose predictions each take `--latency` seconds of wall
clock as a GPU would, once with `--parallel` predictions at once and once with 1. Prints, for each,
the time from the first request to the last image over 30 × latency (1.0 = one after another), the
uploads, creates and polls it sent, and the ratio of the two.

    python bench/cloud_sheet.py [--latency 1.0] [--parallel 8]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from lora_studio.config import ReplicateSettings, Settings  # noqa: E402
from lora_studio.services.sheet import SheetOptions  # noqa: E402
from lora_studio.studio import Studio  # noqa: E402
from tests.conftest import noise_image  # noqa: E402
from tests.fake_replicate import FakeReplicate  # noqa: E402

TOKEN = "r8_bench"
IMAGES = 30


def one_sheet(latency: float, parallel: int, folder: Path) -> dict:
    with FakeReplicate(token=TOKEN, prediction_latency=latency, lifetime_s=3600) as fake:
        settings = Settings(engine="replicate", workspace=folder, replicate=ReplicateSettings(
            base_url=fake.url, parallel=parallel))
        with Studio(settings) as studio:
            reference = folder / "reference.png"
            noise_image(1, 96).save(reference)
            character = studio.characters.create("Bench")
            studio.characters.add_images(character["id"], [reference])
            job = studio.sheet.start(character["id"], SheetOptions(gate=False))
            done = studio.jobs.wait(job.id, 60 * IMAGES * latency + 120)
            assert done.status == "succeeded", done.error
        outputs = fake.find("GET", r"^/outputs/")
        return {
            "wall": outputs[-1].at - fake.requests[0].at,  # first request to the last image
            "uploads": len(fake.find("POST", r"^/v1/files$")),
            "creates": len(fake.find("POST", r"/predictions$")),
            "polls": len(fake.find("GET", r"^/v1/predictions/")),
            "peak": fake.peak_running,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=1.0, help="seconds each fake prediction takes")
    parser.add_argument("--parallel", type=int, default=8, help="predictions in flight together")
    args = parser.parse_args()
    os.environ["REPLICATE_API_TOKEN"] = TOKEN
    os.environ.setdefault("REPLICATE_POLL_INTERVAL", "0.5")  # the client's default
    serial = IMAGES * args.latency
    rows = {}
    for parallel in (args.parallel, 1):
        with tempfile.TemporaryDirectory() as folder:
            started = time.monotonic()
            rows[parallel] = one_sheet(args.latency, parallel, Path(folder))
            rows[parallel]["job"] = time.monotonic() - started
    print(f"{IMAGES} Kontext variations, each prediction {args.latency:g} s on the fake Replicate "
          f"(30 × latency = {serial:g} s)")
    print(f"{'at once':>8} {'wall s':>8} {'wall/(30×lat)':>14} {'uploads':>8} {'creates':>8} {'polls':>6} {'peak':>5}")
    for parallel, row in rows.items():
        print(f"{parallel:>8} {row['wall']:>8.1f} {row['wall'] / serial:>14.3f} {row['uploads']:>8} "
              f"{row['creates']:>8} {row['polls']:>6} {row['peak']:>5}")
    ratio = rows[args.parallel]["wall"] / rows[1]["wall"]
    print(f"ratio N={args.parallel} / N=1: {ratio:.3f}  (goal: wall/(30×lat) ≤ 0.25 at N=8)")


if __name__ == "__main__":
    main()

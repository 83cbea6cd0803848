"""The Replicate engine: the same Engine interface, run on Replicate's hosted models.

Kontext edits and text-to-image are predictions; LoRA training is a Replicate training whose logs
we poll and translate into the app's Reporter. The API token comes from the caller or from
REPLICATE_API_TOKEN and lives only inside the `replicate.Client`: this object never keeps, logs
or repeats it, so errors and reprs are safe to show in the UI.
"""
from __future__ import annotations

import hashlib
import io
import threading
import time
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from ...config import ReplicateSettings
from ...progress import Canceled, Reporter, SpendingCapReached
from ..base import EditRequest, EngineError, GenerateRequest, TrainRequest, TrainResult
from .files import download_bytes, download_weights, safetensors_header, zip_dataset
from .account import TokenFile, current_token
from ..flight import Charges, Free, ImageRequest, at_once
from .client import TOKEN_PAGE, base_url, calling, make_client
from .flight import PredictionFlight
from .logs import LogParser
from .predictions import SYNC_WAIT_S, Pacing, PredictionFailed, cancel_quietly, ridden_out, run_prediction

PLAIN_MODEL = "black-forest-labs/flux-dev"  # text-to-image when no LoRA is applied
# Aspect ratios the FLUX.1 models on Replicate accept; we pick the nearest to width/height.
ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
TERMINAL = ("succeeded", "failed", "canceled")
UPLOAD_REUSE_S = 3600.0  # an uploaded reference is reused this long (Replicate keeps files longer)


class ReplicateEngine:
    """Engine backed by the Replicate HTTP API (through the official `replicate` client)."""

    name = "replicate"
    makes_noise = False
    manager = None  # nothing is held in this process: training runs on Replicate too
    edit_batch = 1

    def __init__(
        self,
        settings: ReplicateSettings,
        token: str | None = None,
        client: Any = None,
        work_dir: Path | None = None,
        *,
        prediction_timeout: float = 600.0,
        training_timeout: float = 4 * 3600.0,
        poll_interval: float | None = None,
        token_file: TokenFile | None = None,
        sync_wait: int = SYNC_WAIT_S,
    ) -> None:
        self.settings = settings
        self.token_file = token_file  # the Settings page's token (0600); REPLICATE_API_TOKEN wins
        self.work_dir = Path(work_dir) if work_dir else None
        self.prediction_timeout = prediction_timeout
        self.training_timeout = training_timeout
        self._poll_interval = poll_interval
        self.sync_wait = sync_wait  # seconds a create waits for its output (Prefer: wait=n)
        self._pacing = Pacing()  # poll turns and 429 pauses shared by every prediction in flight
        self._uploads: dict[str, tuple[str, float]] = {}  # image digest -> (files-API URL, when)
        self._uploading = threading.Lock()
        self._client = client
        if client is None and token:
            # Built now so the token goes straight into the client and is not kept here.
            self._client = self._build_client(token)

    def __repr__(self) -> str:
        return f"ReplicateEngine(base_url={self.base_url!r})"

    # ----------------------------------------------------------------- client and errors

    @property
    def base_url(self) -> str:
        return base_url(self.settings)

    def _build_client(self, token: str):
        return make_client(token, self.base_url)

    def _api(self):
        """The client, built on first use from REPLICATE_API_TOKEN so a missing token only fails work."""
        if self._client is None:
            token, _ = current_token(self.token_file)
            if not token:
                raise EngineError(
                    "Replicate needs an API token: paste one in Settings → Engine, or set REPLICATE_API_TOKEN "
                    f"in the environment (create one at {TOKEN_PAGE})."
                )
            self._client = self._build_client(token)
        return self._client

    @property
    def poll_interval(self) -> float:
        if self._poll_interval is not None:
            return self._poll_interval
        return float(getattr(self._client, "poll_interval", 0.5) or 0.5)

    def _calling(self, action: str):
        """Client and HTTP failures as EngineErrors a user can act on, naming this engine's base URL."""
        return calling(action, self.base_url)

    def describe(self) -> str:
        s = self.settings
        text = (
            f"Replicate at {self.base_url}: edits with {s.kontext_model}, trains with {s.trainer}, "
            f"generates with {s.lora_model}. {at_once(self.parallel)}"
        )
        if self._client is None and not current_token(self.token_file)[1].present:
            text += " No API token yet: paste one in Settings → Engine, or set REPLICATE_API_TOKEN."
        return text

    # ----------------------------------------------------------------- predictions

    def start_flight(self, charges: Charges, stop: Callable[[], bool]) -> PredictionFlight:
        """Up to `settings.parallel` predictions in flight together (engines.flight.open_flight)."""
        client = self._api()  # no token: refused here, before anything starts
        getattr(client, "_client", None)  # its HTTP connection pool, built once here rather than raced by N threads
        return PredictionFlight(self._image, charges, stop, self.parallel)

    @property
    def parallel(self) -> int:
        return self.settings.parallel

    def edit(self, request: EditRequest) -> Image.Image:
        return self._one(request)

    def edit_many(self, requests: list[EditRequest]) -> list[Image.Image]:
        return self._all(requests)

    def generate(self, request: GenerateRequest) -> Image.Image:
        self._generate_inputs(request)  # refused before any request (too many LoRAs, a local-only one)
        return self._one(request)

    def _one(self, request: ImageRequest) -> Image.Image:
        return self._all([request])[0]

    def _all(self, requests: list) -> list[Image.Image]:
        """Every image or the first failure (callers that meter each image use `start_flight`)."""
        images: dict[int, Image.Image] = {}
        with self.start_flight(Free(), lambda: False) as flight:
            for index, request in enumerate(requests):
                flight.submit(index, request)
            for done in flight.results():
                if done.error:
                    raise EngineError(done.error)
                images[done.key] = done.image
        return [images[i] for i in range(len(requests))]

    def _image(self, request: ImageRequest, stop: threading.Event) -> Image.Image:
        """One prediction end to end, in a flight's worker thread."""
        if isinstance(request, EditRequest):
            model, action = self.settings.kontext_model, "editing the image"
            inputs = self._edit_inputs(request, stop)
        else:
            (model, inputs), action = self._generate_inputs(request), "generating the image"
        url = run_prediction(self._api(), model, inputs, action, pacing=self._pacing, stop=stop,
                             timeout=self.prediction_timeout, poll_interval=self.poll_interval,
                             sync_wait=self.sync_wait, url=self.base_url)
        try:
            image = Image.open(io.BytesIO(download_bytes(url)))
            image.load()
        except EngineError as exc:
            raise PredictionFailed(str(exc)) from None
        except Exception:
            raise PredictionFailed(f"Replicate's output for {model} is not an image") from None
        return image.convert("RGB")

    def _edit_inputs(self, request: EditRequest, stop: threading.Event) -> dict:
        return {
            "prompt": request.prompt,
            "input_image": self._image_url(request.image, stop),
            "seed": int(request.seed),
            "aspect_ratio": "match_input_image",
            "num_inference_steps": int(request.steps),
            "guidance": float(request.guidance),
            "output_format": "png",
        }

    def _image_url(self, image: Image.Image, stop: threading.Event) -> str:
        """The reference's files-API URL, uploaded once however many predictions use it (the workers
        that need it meanwhile wait for the one upload)."""
        rgb = image.convert("RGB")
        digest = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
        with self._uploading:
            now = time.monotonic()
            kept = self._uploads.get(digest)
            if kept and now - kept[1] < UPLOAD_REUSE_S:
                return kept[0]
            buf = io.BytesIO()
            rgb.save(buf, format="PNG")
            client = self._api()

            def send():
                buf.seek(0)
                return client.files.create(buf, filename="reference.png", content_type="image/png")

            with self._calling("uploading the reference image"):
                upload = ridden_out(send, "uploading the reference image", self._pacing, stop)
            self._uploads = {d: v for d, v in self._uploads.items() if now - v[1] < UPLOAD_REUSE_S}
            self._uploads[digest] = (upload.urls["get"], now)
            return upload.urls["get"]

    def _generate_inputs(self, request: GenerateRequest) -> tuple[str, dict]:
        inputs: dict[str, Any] = {
            "prompt": request.prompt,
            "seed": int(request.seed),
            "aspect_ratio": nearest_aspect_ratio(request.width, request.height),
            # Replicate's flux-dev models reject more than 50 steps.
            "num_inference_steps": max(1, min(int(request.steps), 50)),
            "guidance": float(request.guidance),
            "output_format": "png",
            # Always explicit: left out, Replicate runs fp8 and scales LoRAs by 1.5 (base.GO_FAST_LORA_FACTOR).
            "go_fast": bool(request.go_fast),
        }
        loras = request.loras
        if len(loras) > 2:
            raise EngineError("Replicate's FLUX LoRA model applies at most two LoRAs at once.")
        for lora in loras:
            if not lora.remote:
                raise EngineError(
                    f"LoRA {lora.name!r} exists only on this machine; Replicate needs a LoRA trained "
                    "there or uploaded somewhere it can download (a URL or owner/model:version)."
                )
        if loras:
            inputs["lora_weights"], inputs["lora_scale"] = loras[0].remote, float(loras[0].weight)
        if len(loras) == 2:
            inputs["extra_lora"], inputs["extra_lora_scale"] = loras[1].remote, float(loras[1].weight)
        return (self.settings.lora_model if loras else PLAIN_MODEL), inputs

    # ----------------------------------------------------------------- training

    def train(self, request: TrainRequest, reporter: Reporter) -> TrainResult:
        s = self.settings
        if not s.destination:
            raise EngineError(
                "Replicate training needs a destination model (owner/name) to receive the trained "
                "version: create one on replicate.com and set it in the Replicate settings."
            )
        client = self._api()
        zip_path = Path(request.zip_path) if request.zip_path else zip_dataset(request)
        with self._calling("starting the training"):
            version = s.trainer_version or self._latest_version(s.trainer)
            reporter.log(f"Uploading {zip_path.name} ({zip_path.stat().st_size // 1024} KiB) to Replicate.")
            upload = client.files.create(zip_path, content_type="application/zip")
            training = client.trainings.create(
                model=s.trainer,
                version=version,
                input={
                    "input_images": upload.urls["get"],
                    "trigger_word": request.trigger,
                    "steps": int(request.steps),
                    "lora_rank": int(request.rank),
                    "learning_rate": float(request.learning_rate),
                    "resolution": str(request.resolution),  # the FLUX trainers take "512,768,1024"-style text
                    "autocaption": False,
                },
                destination=s.destination,
            )
        reporter.output("replicate_training_id", training.id)
        reporter.log(f"Replicate training {training.id} started on {s.trainer}.")
        parser = LogParser(reporter, request.steps)
        deadline = time.monotonic() + self.training_timeout
        billed_since = None  # Replicate bills from when the run leaves "starting"
        with self._calling("following the training"):
            while True:
                parser.feed(training.logs or "", final=training.status in TERMINAL)
                if training.status in TERMINAL:
                    break
                if billed_since is None and training.status != "starting":
                    billed_since = time.monotonic()
                billed = time.monotonic() - billed_since if billed_since is not None else 0.0
                if request.max_seconds is not None and billed > request.max_seconds:
                    cancel_quietly(training)
                    raise SpendingCapReached(
                        f"Stopped at the spending cap: the Replicate training ran {billed:.0f} s, all the cap "
                        "allows, and was canceled there (Replicate keeps no partial LoRA). Raise the cap or "
                        "train fewer steps.", billed_s=billed)
                if reporter.cancel_requested:
                    cancel_quietly(training)
                    reporter.log(f"Canceled Replicate training {training.id}.")
                    raise Canceled("Canceled by the user; the Replicate training was stopped.")
                if time.monotonic() > deadline:
                    cancel_quietly(training)
                    raise EngineError(
                        f"The Replicate training ran past {self.training_timeout / 3600:.1f} h and was canceled."
                    )
                time.sleep(self.poll_interval)
                training.reload()
        billed = time.monotonic() - billed_since if billed_since is not None else None
        if training.status != "succeeded":
            raise EngineError(f"Replicate training {training.status}: {training.error or 'no reason given'}")
        output = training.output if isinstance(training.output, dict) else {}
        weights, trained_version = output.get("weights"), output.get("version")
        if not weights:
            raise EngineError("The Replicate training succeeded but returned no weights URL.")
        lora_path = Path(request.output_dir) / "lora.safetensors"
        reporter.log("Downloading the trained LoRA weights.")
        download_weights(str(weights), lora_path)
        reporter.progress(1.0, "Training finished on Replicate.")
        return TrainResult(
            lora_path=lora_path,
            steps=request.steps,
            final_loss=parser.last_loss,
            remote=str(weights),
            metadata={"replicate_training_id": training.id, "version": trained_version, "weights_url": str(weights)},
            billed_s=billed,
        )

    def _latest_version(self, model: str) -> str:
        found = self._api().models.get(model)
        if not found.latest_version:
            raise EngineError(f"Replicate model {model} has no version to train from.")
        return found.latest_version.id

    def check_lora(self, path: Path) -> dict:
        path = Path(path)
        if not path.is_file():
            raise EngineError(f"LoRA file not found: {path}")
        header = safetensors_header(path)
        from ..lora import lora_family_of, mismatch_text

        made = lora_family_of(header)
        if made is not None and made != "flux1":  # Replicate's LoRA models run FLUX.1 only
            raise EngineError(mismatch_text(made, "flux1", "Replicate's FLUX.1 LoRA models"))
        return {"format": "unknown-remote", "tensors": len([k for k in header if k != "__metadata__"]),
                "family": "flux1"}

    def unload(self) -> None:
        """Nothing is held in memory: the models live on Replicate."""


# --------------------------------------------------------------------- helpers


def nearest_aspect_ratio(width: int, height: int) -> str:
    target = width / max(height, 1)

    def distance(ratio: str) -> float:
        w, h = (int(x) for x in ratio.split(":"))
        return abs(w / h - target)

    return min(ASPECT_RATIOS, key=distance)



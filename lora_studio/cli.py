"""`python -m lora_studio …`: the same workflows, headless, with `--json` for scripts.

Commands work on folders of images (score, select, train) or on the workspace library
(strengths, generate, jobs), through the same services and job queue the app uses.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli_follow import EXIT_STOPPED, Stopped, follow, stopping_on_ctrl_c
from .config import ENGINES, GROUP_OFFLOAD_CHOICES, MEMORY_MODES, QUANTIZE_CHOICES, SPEED_MODES, Settings
from .images import IMAGE_SUFFIXES

ENGINE_OPTIONS = ("engine", "model", "kontext_model", "workspace", "device", "memory_mode", "speed", "compile",
                  "fuse_qkv", "quantize", "group_offload", "batch_edits", "first_block_cache", "train_gpus",
                  "replicate_parallel")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINES, help="tiny (default, noise), local or replicate")
    parser.add_argument("--model", help="FLUX.1-dev folder or hub id (implies --engine local)")
    parser.add_argument("--kontext-model", help="FLUX.1-Kontext-dev folder or hub id, if not --model")
    parser.add_argument("--workspace", help="folder for the database and files (default ./workspace)")
    parser.add_argument("--device", help="auto, cpu, cuda or mps")
    parser.add_argument("--memory-mode", choices=MEMORY_MODES)
    parser.add_argument("--train-gpus", metavar="WHERE",
                        help="where trainings run: off (the app's process, default), isolated (one worker process), "
                             "all or 0,1,… (data-parallel worker processes, one per GPU), cpu:N (N CPU processes)")
    parser.add_argument("--replicate-parallel", type=int, metavar="N",
                        help="Replicate engine: predictions in flight together, 1-16 (default 8)")
    speed = parser.add_argument_group("speed (local engine; unset = auto picks from the GPU)")
    speed.add_argument("--speed", choices=SPEED_MODES, help="auto (default) or off; the flags below override it")
    speed.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="regional torch.compile of the transformer; LoRAs switch by hot-swap, never recompiling")
    speed.add_argument("--fuse-qkv", action=argparse.BooleanOptionalAction, default=None,
                       help="fused QKV projections (one matmul for q, k and v)")
    speed.add_argument("--quantize", choices=QUANTIZE_CHOICES, help="base weights: fp8 (torchao, compute 8.9+) or 8bit")
    speed.add_argument("--group-offload", choices=GROUP_OFFLOAD_CHOICES,
                       help="stream blocks from CPU memory: encoders (text encoders + VAE) or all")
    speed.add_argument("--batch-edits", type=int, help="edits per call in the character sheet, Kontext or Klein (1-8)")
    speed.add_argument("--first-block-cache", type=float, metavar="THRESHOLD",
                       help="skip the remaining blocks when the first barely changes (e.g. 0.05; 0 = off)")


def engine_overrides(args: argparse.Namespace) -> dict:
    """The engine and speed flags as Settings.from_env overrides (launch.py and the CLI share them)."""
    return {name: getattr(args, name, None) for name in ENGINE_OPTIONS}


def settings_from(args: argparse.Namespace, **extra) -> Settings:
    return Settings.from_env(**engine_overrides(args), **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lora_studio", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, help_text):
        p = sub.add_parser(name, help=help_text)
        add_engine_options(p)
        p.add_argument("--json", action="store_true", help="print one JSON document")
        return p

    p = command("sheet", "generate the 30-image character sheet of a reference image")
    p.add_argument("reference")
    p.add_argument("--name", default="")
    p.add_argument("--no-gate", action="store_true", help="keep every variation, even if the face drifts")
    p = command("score", "identity distance and quality flags of each image in a folder")
    p.add_argument("folder")
    p.add_argument("--reference", required=True)
    p = command("select", "pick the N most consistent images of a folder")
    p.add_argument("folder")
    p.add_argument("--reference", required=True)
    p.add_argument("-n", type=int, default=25)
    p = command("train", "train a LoRA on a folder of images (+ optional .txt captions)")
    p.add_argument("folder")
    p.add_argument("--trigger", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--preset", default="Standard")
    p.add_argument("--steps", type=int)
    p.add_argument("--rank", type=int)
    p.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank times the preset's alpha/rank, "
                   "i.e. alpha = rank for the built-in presets)")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--resolution", type=int)
    p.add_argument("--caption", nargs="?", const="", default=None, metavar="CAPTIONER",
                   help="caption the images that have no .txt with the captioner first (default: the one "
                        "downloaded under Settings → Models; the tiny engine's is noise)")
    p = command("strengths", "sweep a LoRA's strength for one prompt and seed(s)")
    p.add_argument("--lora", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--strengths", default="0,0.6,0.8,1.0,1.2")
    p.add_argument("--seed", type=int, action="append", dest="seeds")
    p.add_argument("--with", dest="extra", action="append", default=[], metavar="NAME:WEIGHT")
    p = command("generate", "generate an image, optionally with LoRAs or a task")
    p.add_argument("--prompt", default="")
    p.add_argument("--lora", action="append", default=[], metavar="NAME:WEIGHT")
    p.add_argument("--task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, help="default: the model family's (FLUX.1: 1024)")
    p.add_argument("--height", type=int)
    p.add_argument("--steps", type=int, help="denoising steps (default: the family's, FLUX.1: 28)")
    p.add_argument("--guidance", type=float, help="guidance (default: the family's, FLUX.1: 3.5)")
    p.add_argument("--out", default="", help="where to save the PNG (default: the job folder)")
    command("jobs", "list jobs in the workspace")
    p = command("publish", "publish a LoRA of the library to the Hugging Face Hub (needs a write token)")
    p.add_argument("name", help="the LoRA's name or id in the library")
    p.add_argument("repo", help="the Hub repo to publish to, e.g. your-name/mila-lora (made private unless --public)")
    p.add_argument("--public", action="store_true", help="make a new repo public (an existing one keeps its visibility)")
    p = command("import-lora", "import a community LoRA from the Hugging Face Hub into the library")
    p.add_argument("reference", help="owner/name (its one LoRA file), owner/name/FILE.safetensors, or the file's "
                   "huggingface.co address")
    p.add_argument("--name", default="", help="the library name (default: the file's name)")
    p.add_argument("--trigger", default="", help="the trigger word (default: the repo card's instance_prompt)")
    p = command("models", "local FLUX.1 models: list the catalogue, download one, or log in to Hugging Face")
    p.add_argument("action", choices=("list", "download", "login", "logout"))
    p.add_argument("model", nargs="?", help="hub id (owner/name) for download")
    return parser


def folder_images(folder: str) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise SystemExit(f"error: {folder} is not a folder")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SystemExit(f"error: no images in {folder}")
    return images


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result, text = run(args)
    except (Stopped, KeyboardInterrupt) as exc:  # Ctrl-C: the jobs were asked to stop (cli_follow.py)
        _say(args, str(exc) if isinstance(exc, Stopped) else "Stopped.", prefix="")
        return EXIT_STOPPED
    except Exception as exc:  # noqa: BLE001 - a CLI prints one clear line, not a trace
        from .jobs import describe_error

        _say(args, describe_error(exc))
        return 1
    print(json.dumps(result, indent=2, default=str) if args.json else text)
    return 0


def _say(args, message: str, prefix: str = "error: ") -> None:
    if getattr(args, "json", False):
        print(json.dumps({"error": message}))
    else:
        print(f"{prefix}{message}", file=sys.stderr)


def run(args) -> tuple[object, str]:
    if args.command in ("score", "select"):
        return _score_or_select(args)
    if args.command == "models":
        from .cli_models import models_command

        return models_command(args, settings_from)
    from .studio import Studio

    with Studio(settings_from(args), start=args.command not in READ_ONLY) as studio, stopping_on_ctrl_c(studio):
        return COMMANDS[args.command](studio, args)


def _score_or_select(args) -> tuple[object, str]:
    from . import identity
    from .images import open_image

    images = folder_images(args.folder)
    try:
        reference = identity.reference_descriptor(open_image(args.reference, "The reference"))
    except identity.NoFaceError as exc:
        raise SystemExit(f"error: {exc}") from None
    scores = identity.score_images([(str(p), open_image(p, p.name)) for p in images], reference)
    if args.command == "score":
        rows = [s.to_dict() | {"path": s.key} for s in scores]
        lines = [f"{Path(s.key).name}: " + (f"distance {s.distance:.3f}" if s.distance is not None else "no face")
                 + "".join(f" [{f.code}]" for f in s.flags) for s in scores]
        return rows, "\n".join(lines)
    chosen = identity.auto_select(scores, n=args.n)
    descriptors = [s.descriptor for s in scores if s.key in chosen and s.descriptor is not None]
    set_score = identity.set_consistency(descriptors, reference).to_dict() if descriptors else None
    return {"selected": chosen, "set_score": set_score}, "\n".join(chosen)


def _sheet(studio, args):
    character = studio.characters.create(args.name or Path(args.reference).stem)
    studio.characters.add_images(character["id"], [args.reference])
    from .services.sheet import SheetOptions

    job = studio.sheet.start(character["id"], SheetOptions(gate=not args.no_gate))
    done = _wait(studio, job.id, args)
    paths = [str(i.path) for i in studio.characters.images(character["id"], "sheet")]
    return {"character_id": character["id"], "job": done.id, "images": paths, **done.outputs}, "\n".join(paths)


def _train(studio, args):
    from .services.datasets import dataset_from_folder
    from .services.training_jobs import TrainOptions

    dataset = dataset_from_folder(studio.store, folder_images(args.folder), args.trigger)
    dataset_id = dataset["id"]
    if dataset["uncaptioned"] and args.caption is not None:
        _wait(studio, studio.captions.start_for_dataset(dataset_id, args.caption, allow_folder=True).id, args)
    elif dataset["uncaptioned"] and not args.json:
        print(f"{len(dataset['uncaptioned'])} of {dataset['count']} images have no caption (.txt) and train as "
              f"'photo of {args.trigger}'; add --caption to have the captioner describe them.", file=sys.stderr)
    job = studio.training.start(dataset_id, TrainOptions(
        name=args.name, trigger=args.trigger, preset=args.preset, steps=args.steps, rank=args.rank, alpha=args.alpha,
        learning_rate=args.learning_rate, resolution=args.resolution))
    done = _wait(studio, job.id, args)
    lora = studio.library.get(done.outputs["lora_id"])
    return {"job": done.id, "lora": lora}, f"LoRA {lora['name']} saved: {studio.library.path(lora)}"


def _strengths(studio, args):
    from .services.strength_analysis import parse_strengths
    from .services.tester import SweepRequest
    from .services.generate import parse_lora_weights as parse_weights

    request = SweepRequest(lora=args.lora, prompt=args.prompt, strengths=tuple(parse_strengths(args.strengths)),
                           seeds=tuple(args.seeds or [1, 2, 3]),
                           extra=tuple(parse_weights(",".join(args.extra)).items()))
    done = _wait(studio, studio.tester.start(request).id, args)
    analysis = done.outputs["analysis"]
    grid = str(studio.store.path(done.outputs["grid"]))  # jobs store workspace-relative paths
    return {**done.outputs, "grid": grid}, f"grid: {grid}\n{analysis['reason']}"


def _generate(studio, args):
    from .services.generate import GenerateOptions
    from .services.generate import parse_lora_weights as parse_weights

    job = studio.generator.start(GenerateOptions(prompt=args.prompt, loras=parse_weights(",".join(args.lora)),
                                                 seed=args.seed, width=args.width, height=args.height,
                                                 steps=args.steps, guidance=args.guidance, task=args.task))
    done = _wait(studio, job.id, args)
    path = str(studio.store.path(done.outputs["image"]))  # jobs store workspace-relative paths
    if args.out:
        from .store import atomic_write_bytes

        atomic_write_bytes(Path(args.out), Path(path).read_bytes())
        path = args.out
    return {"image": path, "job": done.id}, path


def _jobs(studio, args):
    jobs = studio.jobs.list()
    rows = [{"id": j.id, "kind": j.kind, "title": j.title, "status": j.status, "progress": j.progress,
             "error": j.error} for j in jobs]
    return rows, "\n".join(f"{j.id}  {j.status:<11} {100 * j.progress:5.1f}%  {j.title}" for j in jobs)


def _wait(studio, job_id, args):
    seen = [0]

    def show(view) -> None:
        if not args.json:
            for line in view.logs[seen[0]:]:
                print(line, file=sys.stderr)
            seen[0] = len(view.logs)

    follow(studio, job_id, show)
    return studio.wait(job_id)


def _publish(studio, args):
    done = _wait(studio, studio.publish.start(args.name, args.repo, public=args.public).id, args)
    return {"job": done.id, **done.outputs}, done.message


def _import_lora(studio, args):
    done = _wait(studio, studio.hub_imports.start(args.reference, args.name, args.trigger).id, args)
    lora = studio.library.get(done.outputs["lora_id"])
    return {"job": done.id, "lora": lora}, f"{done.message}\n{studio.library.path(lora)}"


READ_ONLY = ("jobs",)  # they take no job: a running app on the same workspace keeps its own
COMMANDS = {"import-lora": _import_lora, "publish": _publish, "sheet": _sheet, "train": _train,
            "strengths": _strengths, "generate": _generate, "jobs": _jobs}

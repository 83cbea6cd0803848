"""The headless CLI: same services, --json output, clear errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lora_studio.cli import main
from tests.conftest import noise_image

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *args) -> dict | list:
    code = main(list(args))
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


@pytest.fixture
def photos(tmp_path, astronaut_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    face = Image.open(astronaut_path).convert("RGB")
    face.save(folder / "a.png")
    face.transpose(Image.FLIP_LEFT_RIGHT).save(folder / "b.png")
    face.crop((0, 0, 400, 400)).resize((512, 512)).save(folder / "c.png")
    noise_image(3, 512).save(folder / "noise.png")
    return folder


def test_score_and_select(capsys, photos, astronaut_path):
    rows = run(capsys, "score", str(photos), "--reference", str(astronaut_path), "--json")
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["b.png"]["face_found"] and by_name["b.png"]["distance"] < 0.6
    assert not by_name["noise.png"]["face_found"]
    assert any(f["code"] == "no_face" for f in by_name["noise.png"]["flags"])
    picked = run(capsys, "select", str(photos), "--reference", str(astronaut_path), "-n", "3", "--json")
    assert len(picked["selected"]) == 3 and not any(p.endswith("noise.png") for p in picked["selected"])


@pytest.mark.slow  # trains, sweeps and generates
def test_train_strengths_generate_jobs(capsys, tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(4):
        noise_image(i, 64).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"photo of mila_v1, pose {i}")
    ws = ["--workspace", str(tmp_path / "ws")]
    trained = run(capsys, "train", str(folder), "--trigger", "mila_v1", "--name", "mila", "--steps", "6",
                  "--rank", "4", "--json", *ws)
    assert Path(tmp_path / "ws" / trained["lora"]["path"]).is_file()
    sweep = run(capsys, "strengths", "--lora", "mila", "--prompt", "photo of mila_v1", "--strengths", "0,1",
                "--seed", "1", "--json", *ws)
    assert Path(sweep["grid"]).is_file() and sweep["analysis"]["reason"]
    out = tmp_path / "out.png"
    made = run(capsys, "generate", "--prompt", "photo of mila_v1", "--lora", "mila:0.8", "--out", str(out),
               "--json", *ws)
    assert made["image"] == str(out) and Image.open(out).size == (64, 64)
    jobs = run(capsys, "jobs", "--json", *ws)
    assert [j["kind"] for j in jobs] == ["train", "sweep", "generate"]


def test_errors_are_one_clear_line(capsys, tmp_path):
    code = main(["strengths", "--lora", "none", "--prompt", "p", "--strengths", "abc", "--json",
                 "--workspace", str(tmp_path)])
    assert code == 1
    assert "not a number" in json.loads(capsys.readouterr().out)["error"]


def test_module_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lora_studio", "jobs", "--json", "--workspace", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


@pytest.mark.slow  # a whole sheet
def test_sheet_command(capsys, tmp_path, astronaut_path):
    made = run(capsys, "sheet", str(astronaut_path), "--json", "--workspace", str(tmp_path / "ws"))
    assert len(made["images"]) == 30 and all(Path(p).is_file() for p in made["images"])
    assert made["generated"] == 30

"""bench/gpu_suite.py cannot rot before a GPU is found: its --smoke run goes end to end on the CPU with the
wide Flux (FLUX.1-dev widths, one block of each kind), and its table logic is checked on its own."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "bench" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_suite", None)


@pytest.mark.slow  # a subprocess on the wide Flux
def test_smoke_run_fills_every_table_and_leaves_the_readme_alone(tmp_path):
    out = tmp_path / "table.md"
    readme = (ROOT / "bench" / "README.md").read_text()
    proc = subprocess.run(
        [sys.executable, "bench/gpu_suite.py", "--smoke", "--out", str(out), "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    for title in ("Text-to-image with a rank-16 LoRA loaded", "LoRA switch", "Kontext character sheet",
                  "Training, rank 16", "Our engine, one setting changed"):
        assert f"### {title}" in text
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert not {k: v for k, v in rows.items() if "error" in str(v.get("notes", ""))}
    assert rows["generate/plain diffusers"]["s/image"] > 0
    ours = rows["generate/ours (auto speed)"]
    assert ours["vs plain image"] == "identical"  # fused QKV with a LoRA, through our canonical form
    assert rows["switch/ours (auto speed)"]["recompiles"] == "0"
    assert rows["sheet/ours (auto speed)"]["images"] == 2
    assert rows["train/full · 64²"]["s/step"] > 0
    assert "### FLUX.2 [klein] 4B text-to-image" in text and "### FLUX.2 [klein] 4B training" in text
    assert rows["klein_generate/ours (auto speed)"]["vs plain image"] == "identical"
    assert rows["klein_sheet/ours (auto speed)"]["images"] == 2 and rows["klein_train/full · 64²"]["s/step"] > 0
    assert list(rows).index("klein_generate/plain diffusers") < list(rows).index("generate/plain diffusers")
    assert (ROOT / "bench" / "README.md").read_text() == readme


def test_the_transformer_does_74_tflop_per_step_at_1024(suite):
    from lora_studio.engines.builtin.wide import transformer_config

    assert suite.flux_tflop(transformer_config(full_size=True), suite.image_tokens(1024), 512) == \
        pytest.approx(74.3, abs=0.5)


def test_readme_section_is_replaced_in_place_and_later_runs_merge(suite, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\nbefore\n\n{suite.START}\nold table\n{suite.END}\n\nafter\n")
    cfg = suite.Config(False, "cpu", 1024, 512, 28, 3, 30, (512,), 4, tmp_path, readme, tmp_path / "r.json")
    first = suite.Results.open(cfg.results, fresh=True)
    first.start_run(cfg)
    first.put("generate", "ours (auto speed)", {"settings": "x", "s/image": 2.5})
    first.save(readme, readme=True)
    second = suite.Results.open(cfg.results, fresh=False)  # a later `--only train` run
    second.start_run(cfg)
    second.put("train", "nf4 · 512²", {"notes": suite.error_cell(torch.cuda.OutOfMemoryError("CUDA out of memory"))})
    second.save(readme, readme=True)
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "old table" not in text
    assert "| ours (auto speed) | x | 2.50 |" in text and "| nf4 · 512² | — | — | out of memory | 2 |" in text
    assert "- run 1: CPU" in text and "- run 2: CPU" in text


def test_refusals_are_immediate_and_in_words(suite, capsys):
    with pytest.raises(SystemExit):
        suite.main(["--smoke"])
    assert "--smoke needs --out PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        suite.main(["--only", "nonsense", "--smoke", "--out", "x.md"])
    assert "unknown group(s) nonsense" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            suite.main([])
        assert "no CUDA GPU here" in capsys.readouterr().err


def test_ablations_turn_off_each_auto_setting_in_turn(suite):
    from lora_studio.engines.speed.settings import auto_speed
    from tests.test_speed_auto import H100

    names = [name for name, _, _ in suite.ablation_variants(auto_speed(H100))]
    assert names == ["without fp8 base", "without compile (and hot-swap)", "without fused QKV",
                     "with first-block cache 0.05", "with cuDNN attention"]


def test_a_budget_refuses_rows_that_do_not_fit_and_says_what_they_needed():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from gpu_budget import Budget, estimate
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert estimate("klein_train:lowvram") > estimate("klein_train") > 0
    assert estimate("no such row") == 60 and estimate("klein_train", smoke=True) == estimate("klein_train") / 100
    unlimited, tight = Budget(None), Budget(100)
    assert unlimited.fits(10**6) and unlimited.left() is None
    assert tight.fits(50) and not tight.fits(500)
    words = tight.refusal(500)
    assert words.startswith("not started: needs about 500 s") and "of the 100 s budget were left" in words

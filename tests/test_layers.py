"""The layer rules a newcomer relies on: UI without torch, services without gradio."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lora_studio"


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_building_the_ui_imports_no_torch():
    modules = imported_after("import lora_studio.ui.app")
    assert "torch" not in modules and "diffusers" not in modules


def test_services_and_store_import_no_gradio_or_torch():
    modules = imported_after("import lora_studio.studio, lora_studio.cli")
    assert "gradio" not in modules and "torch" not in modules


def test_source_imports_point_down():
    for path in (PACKAGE / "services").glob("*.py"):
        text = path.read_text()
        assert "import gradio" not in text and "import torch" not in text, path
    for path in (PACKAGE / "engines").glob("*.py"):
        assert "services" not in text_imports(path) and "gradio" not in text_imports(path), path
    for path in (PACKAGE / "ui").glob("*.py"):
        assert "import torch" not in path.read_text(), path


def text_imports(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if line.lstrip().startswith(("import", "from")))


def test_startup_builds_the_app_without_loading_a_model(tmp_path):
    from lora_studio.config import Settings
    from lora_studio.studio import Studio
    from lora_studio.ui.app import build_app

    with Studio(Settings(workspace=tmp_path)) as studio:
        build_app(studio)
        assert studio._engine is None  # the first job builds the engine and loads the model
        assert "noise" in studio.engine_description()

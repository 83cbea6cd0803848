"""The layer rules a newcomer relies on (../shared/DESIGN.md): arrows point down only.

    ui → studio / services / jobs / images → engines, training, identity → store, files
    training drives the engines' model manager; engines never import training or services.
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lora_studio"
MAX_MODULE_LINES = 450


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def package_imports(path: Path) -> set[str]:
    """Every lora_studio module a file imports (at any depth, lazy imports included), as dotted names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + ".__init__"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("lora_studio")}


def under(name: str, *layers: str) -> bool:
    return any(name == f"lora_studio.{layer}" or name.startswith(f"lora_studio.{layer}.") for layer in layers)


def test_building_the_ui_imports_no_torch():
    modules = imported_after("import lora_studio.ui.app")
    assert "torch" not in modules and "diffusers" not in modules


def test_services_and_store_import_no_gradio_or_torch():
    modules = imported_after("import lora_studio.studio, lora_studio.cli")
    assert "gradio" not in modules and "torch" not in modules


def test_source_imports_point_down():
    for path in (PACKAGE / "services").rglob("*.py"):
        text = path.read_text()
        assert "import gradio" not in text and "import torch" not in text, path
    for path in (PACKAGE / "engines").rglob("*.py"):
        assert "services" not in text_imports(path) and "gradio" not in text_imports(path), path
    for path in (PACKAGE / "ui").glob("*.py"):
        assert "import torch" not in path.read_text(), path


def test_engines_never_import_training_or_services():
    for path in (PACKAGE / "engines").rglob("*.py"):
        wrong = {m for m in package_imports(path) if under(m, "training", "services", "ui", "studio", "jobs")}
        assert not wrong, f"{path.name} imports {sorted(wrong)}"


def test_a_package_is_entered_through_its_surface():
    """Outside an engines package, code imports the package, never one of its leaf modules."""
    packages = [p.parent for p in (PACKAGE / "engines").glob("*/__init__.py")]
    for path in PACKAGE.rglob("*.py"):
        for name in package_imports(path):
            for package in packages:
                dotted = ".".join(package.relative_to(ROOT).parts)
                inside = package in path.parents
                if not inside and name.startswith(dotted + ".") and (package / (name[len(dotted) + 1:].split(".")[0] + ".py")).exists():
                    raise AssertionError(f"{path.relative_to(PACKAGE)} imports {name}: use {dotted}")


def test_ui_imports_only_the_studio_services_jobs_images_and_itself():
    allowed = ("studio", "services", "jobs", "images", "ui")
    for path in (PACKAGE / "ui").glob("*.py"):
        wrong = {m for m in package_imports(path) if m != "lora_studio" and not under(m, *allowed)}
        assert not wrong, f"{path.name} imports {sorted(wrong)}"


def test_training_and_identity_know_nothing_of_services_or_ui():
    for folder in ("training", "identity"):
        for path in (PACKAGE / folder).rglob("*.py"):
            wrong = {m for m in package_imports(path) if under(m, "services", "ui", "studio", "jobs")}
            assert not wrong, f"{folder}/{path.name} imports {sorted(wrong)}"


def test_no_module_is_a_house_of_many_rooms():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


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

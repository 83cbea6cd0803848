"""Every sentence the UI shows, in one place, so the voice stays consistent and easy to change."""

TITLE = "LoRA Studio"
TAGLINE = "One reference image → a character sheet → the most consistent 20–30 images → a FLUX.1 LoRA → the right strength."
TINY_BANNER = (
    "**Demo mode: tiny built-in Flux.** Every step runs for real, but the pictures are noise (random "
    "weights, no faces). For real images start with `python launch.py --model /path/to/FLUX.1-dev` "
    "(local GPU) or `--engine replicate` with `REPLICATE_API_TOKEN` set."
)
NO_CHARACTER = "Create a character or pick one above to begin."
REFERENCE_HELP = "Upload a few images of one character, then click the one that shows the face best: it becomes the reference."
SHEET_HELP = "30 variations of the reference: 8 face angles, 6 expressions, 8 poses, 8 contexts. Stop any time: finished images are kept and a new run continues."
SELECTION_HELP = "Click an image to select or deselect it. Train on 20–30 images; 25 is a good number. Quick-select picks the set whose faces agree most, across all four categories."
TRAINING_HELP = "Training runs in the background: close the page and come back, the job is still here."
TESTER_HELP = "The same prompt and seeds at several strengths, with and without the LoRA, measured: does it keep the face, and does it freeze it?"
LIBRARY_HELP = "Every trained or imported LoRA. Import Flux LoRAs in diffusers, kohya/ComfyUI or ai-toolkit format (.safetensors)."
NOTHING_RUNNING = "No job yet."
SELECTED_MARK = "✓"
UNSELECTED_MARK = "○"

"""Every sentence the UI shows, in one place, so the voice stays consistent and easy to change."""

TITLE = "LoRA Studio"
TAGLINE = ("One reference image → a character sheet → the most consistent 20–30 images → a FLUX LoRA (FLUX.2 [klein] "
           "or FLUX.1) → the right strength.")
TINY_BANNER = (
    "**Demo mode: tiny built-in Flux.** Every step runs for real, but the pictures are noise (random "
    "weights, no faces)."
)
NO_CHARACTER = "Create a character or pick one above to begin."
REFERENCE_HELP = "Upload a few images of one character, then click the one that shows the face best: it becomes the reference."
SHEET_HELP = "30 variations of the reference: 8 face angles, 6 expressions, 8 poses, 8 contexts. Stop any time: finished images are kept and a new run continues."
SELECTION_HELP = "Click an image to select or deselect it. Train on 20–30 images; 25 is a good number. Quick-select picks the set whose faces agree most, across all four categories."
TRAINING_HELP = "Training runs in the background: close the page and come back, the job is still here."
TESTER_HELP = "The same prompt and seeds at several strengths, with and without the LoRA, measured: does it keep the face, and does it freeze it?"
SIZE_INFO = "The sizes the model was trained at; or set width and height yourself, within what this engine draws."
STEPS_DRAWN = "This engine draws at most {steps} steps whatever is set (its pictures are noise at any count)."
LIBRARY_HELP = ("Every trained or imported LoRA. Import Flux LoRAs in diffusers, kohya/ComfyUI or ai-toolkit format "
                "(.safetensors); a LoRA works only on the family it was made for (FLUX.1 or FLUX.2 [klein]).")
NOTHING_RUNNING = "No job yet."
SELECTED_MARK = "✓"
UNSELECTED_MARK = "○"
NEXT_SELECTION = "Next: choose the images → 3 · Selection"
NEXT_TRAINING = "Next: train on this dataset → 4 · Training"
NEXT_TESTER = "Next: find the right strength → 5 · Strength tester"
SHEET_DONE = "**The character sheet is ready.** Pick the 20–30 most consistent images next."
TRAINING_DONE = "**The LoRA is trained and in the library.** Test which strength keeps the face next."
SELECTION_DETAILS = "Click an image to (de)select it; its distance and flags appear here in full. Hover an image to read its caption."
PRESET_HELP = ("Save the form as a preset. On this machine (or logged in as the owner) it is kept in the workspace "
               "and listed for everyone; a visitor on a shared link keeps theirs in their own browser. Beginner, "
               "Standard and Expert are built in and stay as they are.")
ALPHA_LABEL = "Alpha (blank = same as rank)"
ALPHA_INFO = ("LoRA scale = alpha / rank. Blank keeps the preset's ratio (1 for the built-ins), so changing the "
              "rank alone keeps the strength. The exported files carry this scale in their weights.")
CAP_LABEL = "Spending cap for this job (USD, 0 = none)"
CAP_INFO = "The job stops before the paid call that would pass it; what was made is kept."
GO_FAST_LABEL = "Replicate fast mode (go_fast: fp8, and Replicate multiplies LoRA strengths by 1.5)"
GO_FAST_OFF_NOTE = "The strength tester always runs with go_fast off, so its strengths mean the same on Replicate as at home."
PRICES_HELP = (
    "What a paid call on Replicate costs and how long it usually takes; every estimate in the app reads "
    "this table. Prices change: check the source and edit a row (USD, seconds, source, date), then save. "
    "It is kept in the workspace (`replicate_prices.json`) and only the owner saves it. Each price stays "
    "between a tenth and a hundred times the built-in one; the source is plain text (no links)."
)
FIRST_RUN = (
    "**First run? Choose what draws your pictures.** With an NVIDIA GPU, FLUX.2 [klein] 4B is open (no token, "
    "Apache-2.0) and one checkpoint draws the sheet and every picture: the button below downloads it. Or, in "
    "*Settings → Engine*: `local` with FLUX.1-dev (gated: a token; plus FLUX.1-Kontext-dev for the character "
    "sheet), or `replicate` on Replicate's GPUs with your API token. The switch needs no restart (or choose at "
    "start with `--engine local` for FLUX.2 [klein] 4B, `--model <id or folder>` or `--engine replicate`)."
)
SETUP_BUTTON = "Set up an engine →"
KLEIN_BUTTON = "FLUX.2 klein 4B — no token needed"
ENGINE_HELP = (
    "Which engine draws the pictures, and from which models. A model is a Hugging Face hub id (e.g. "
    "`black-forest-labs/FLUX.2-klein-4B` or `black-forest-labs/FLUX.1-dev`) or the absolute path of a folder in "
    "diffusers layout; its family is read from its model_index.json. FLUX.2 [klein] draws the character sheet "
    "with the same checkpoint and trains LoRAs on its base checkpoint, found by itself when it is downloaded "
    "(or given as the second model). FLUX.1's sheet needs FLUX.1 Kontext (`black-forest-labs/FLUX.1-Kontext-dev`) "
    "as the second model: only its transformer is loaded, under FLUX.1-dev's text encoders and VAE. Switching "
    "needs no restart: it is refused while a job runs, and jobs queued meanwhile run on the new engine. Values "
    "set by a flag or a LORA_STUDIO_* variable win over this page."
)
REPLICATE_HELP = (
    "Your Replicate API token is checked with Replicate's account call and kept in a file only this "
    "computer's user can read (never in the database, the logs or a reply). `REPLICATE_API_TOKEN` in the "
    "environment wins when set. Trained LoRAs become versions of a model in your account: pick one or create "
    "a private one."
)
SWITCHED = "Switched to **{engine}**. {detail}"
# ---- Settings → Models (local model catalogue, downloads, Hugging Face token) ----
MODELS_HELP = (
    "FLUX.2 [klein] and FLUX.1 weights for the **local** engine. Sizes are what the pipeline loads (no single-file checkpoints); "
    "downloads go to the Hugging Face cache (`HF_HOME` / `HF_HUB_CACHE`), run beside the GPU queue, and "
    "keep every finished byte across a cancel, a dropped connection or a restart. A folder that already "
    "holds the weights is used as it is. Then choose it in *Settings → Engine* (or start with `--model <id or folder>`)."
)
USE_MODEL_BUTTON = "Use this model"
USE_MODEL = ("**{model}** is filled in as the {field} above: click **Switch engine** to use it (no restart; the "
             "model loads with the next job).")
TOKEN_HELP = ("Gated models (FLUX.1-dev, FLUX.1-Kontext-dev, FLUX.2 [klein] 9B) need a Hugging Face **read** token "
              "and the licence accepted on the model's page; FLUX.2 [klein] 4B needs none.")

TRAIN_ON_LABEL = "Where it trains"
BOTH_CHECKPOINTS_LABEL = "Sweep on both checkpoints (FLUX.2 [klein]: distilled and base)"
BOTH_CHECKPOINTS_INFO = ("A Klein LoRA trains on the base and draws on the distilled checkpoint: the same sweep on "
                         "each shows whether it keeps its strength there.")
INTERNAL_ERROR = ("Something went wrong inside LoRA Studio ({error}). Nothing you entered caused it; the details "
                  "are in the app's log.")
# ---- Selection → captions, Library → the Hub (issue 24) ----
CAPTIONS_HELP = (
    "What each selected image trains on. Sheet images start with their edit prompt's caption; *Caption these "
    "images* has the captioner describe what should stay free to change (clothing, pose, framing, setting, light, "
    "expression) and never the face, which the trigger word carries. The trigger word stays in every caption: an "
    "edit that drops it gets it back first, and find/replace leaves it alone. The dataset, its zip and a Replicate "
    "training use these captions.")
CAPTION_NOISE = ("**Tiny engine:** its captioner has random weights, so the captions it writes are noise words, like "
                 "its pictures. Download Qwen3-VL under *Settings → Models* and use a real model for real captions.")
CAPTION_IDENTITY = ("This caption names the face's own traits ({words}): the LoRA then learns them as something a "
                    "prompt asks for, and the face drifts when a prompt does not. Leave them to the trigger word.")
CAPTION_PICK_FIRST = "Pick the image whose caption to change first (select images above)."
CAPTION_SAVED = "Caption saved."
CAPTION_RESET = "Back to the caption its edit prompt gives."
HUB_HELP = (
    "**Publish** sends the picked LoRA's two files, a model card (base model and its licence, trigger word, the "
    "strength per tool and the face measured at each strength) and the strength test's pictures to a Hugging Face "
    "repo, as one commit; a new repo is private unless *Public* is ticked, and publishing again adds a commit. It "
    "needs a token with write access (Settings → Models). **Import from the Hub** takes `owner/name` or "
    "`owner/name/file.safetensors`, downloads it like the models and reads it at its author's strength.")
HUB_OWNER_ONLY = "Publishing and Hub imports are the owner's: they use the owner's Hugging Face token."

#!/usr/bin/env bash
# LoRA Studio launcher for Linux (macOS: start.command runs this file).
#
# First run: makes a Python environment in .venv beside this file, installs requirements.txt with
# the tested versions of constraints.txt, then starts the app and opens the browser on it.
# Later runs reuse .venv and start in seconds. The install counts as done only once pip has
# finished: .venv/.lora-studio-installed then holds a hash of both files, so an interrupted or
# failed install is retried on the next run and a changed requirements file installs again.
#
#   ./start.sh [launch.py options]     e.g. ./start.sh --port 7861 --no-browser
#
# LORA_STUDIO_PYTHON=/path/to/python3 picks the Python that makes .venv.
# Torch: on Linux, PyPI's torch is the CUDA build, so an NVIDIA GPU with its driver just works.
# For another build (ROCm, an older CUDA), install it into .venv first:
#   .venv/bin/python -m pip install torch --index-url https://download.pytorch.org/whl/rocm6.4
# any torch that satisfies constraints.txt is kept.
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE" || exit 1
VENV="$HERE/.venv"
PY="$VENV/bin/python"
MARKER="$VENV/.lora-studio-installed"
LOG="$VENV/install.log"

say() { printf '%s\n' "$*"; }
fail() { printf 'LoRA Studio: %s\n' "$*" >&2; exit 1; }

python_ok() {  # a Python 3.10 or newer that can make a venv
  "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1
}

find_python() {
  local candidate
  for candidate in "${LORA_STUDIO_PYTHON:-}" python3.13 python3.12 python3.11 python3.10 python3 python; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

no_python_help() {
  local found
  found="$(command -v python3 2>/dev/null || true)"
  if [ -n "$found" ]; then
    say "Found $("$found" --version 2>&1) at $found, but LoRA Studio needs Python 3.10 or newer."
  else
    say "No Python 3 was found on this computer."
  fi
  case "$(uname -s)" in
    Darwin) say "Install Python 3.12 from https://www.python.org/downloads/macos/ (or: brew install python@3.12), then run this again." ;;
    *) say "Install Python 3.10 or newer with your package manager, e.g. 'sudo apt install python3 python3-venv'"
       say "(Debian/Ubuntu) or 'sudo dnf install python3' (Fedora), then run this again." ;;
  esac
}

requirements_hash() {
  "$PY" - <<'EOF'
import hashlib
digest = hashlib.sha256()
for name in ("requirements.txt", "constraints.txt"):
    with open(name, "rb") as handle:
        digest.update(name.encode() + b"\0" + handle.read() + b"\0")
print(digest.hexdigest())
EOF
}

# 1. The environment: made once; a broken one (no pip in it) is made again.
if [ ! -x "$PY" ] || ! python_ok "$PY" || ! "$PY" -m pip --version >/dev/null 2>&1; then
  BASE="$(find_python)" || { no_python_help >&2; exit 1; }
  say "Creating the Python environment in $VENV (with $("$BASE" --version 2>&1)) ..."
  rm -rf "$VENV"
  if ! "$BASE" -m venv "$VENV" || ! "$PY" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
    fail "could not create a Python environment with $BASE.
On Debian/Ubuntu install the venv module first: sudo apt install python3-venv
(or the one matching your Python, e.g. python3.12-venv), then run this again."
  fi
fi

# 2. The packages: installed when the hash of requirements + constraints is not the one recorded.
WANT="$(requirements_hash)" || fail "could not read requirements.txt and constraints.txt in $HERE."
HAVE="$(cat "$MARKER" 2>/dev/null || true)"
if [ "$WANT" != "$HAVE" ]; then
  rm -f "$MARKER"  # from here until pip succeeds, the environment is not complete
  say "Installing LoRA Studio's packages into .venv (the first time takes several minutes; the log is $LOG) ..."
  "$PY" -m pip install --disable-pip-version-check -r requirements.txt -c constraints.txt 2>&1 \
    | tee "$LOG" | grep --line-buffered -E '^(Collecting|Installing collected|Successfully installed|ERROR)'
  if [ "${PIPESTATUS[0]}" -ne 0 ]; then
    {
      say ""
      say "The install did not finish. The end of the pip log ($LOG):"
      tail -n 25 "$LOG"
      say ""
      if grep -q "No matching distribution" "$LOG"; then
        say "A package has no build for $("$PY" --version 2>&1) on this system: install Python 3.12,"
        say "delete the .venv folder and run this again (LORA_STUDIO_PYTHON=/path/to/python3.12 picks it)."
      else
        say "Check the internet connection and free disk space (torch alone needs several GB), then run"
        say "this again: it retries the install and keeps what was already downloaded."
      fi
    } >&2
    exit 1
  fi
  printf '%s\n' "$WANT" > "$MARKER.tmp" && mv "$MARKER.tmp" "$MARKER"
  say "Packages installed."
else
  say "Packages already installed; starting (no install needed)."
fi

# 3. The app: launch.py with this launcher's arguments; it opens the browser on a local launch.
exec "$PY" "$HERE/launch.py" ${1+"$@"}  # (the ${1+...} form: macOS's bash 3.2 with set -u)

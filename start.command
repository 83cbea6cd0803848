#!/usr/bin/env bash
# LoRA Studio launcher for macOS: double-click it in Finder (it opens in Terminal).
# It runs start.sh from this folder: the first run makes .venv and installs the packages (several
# minutes), later runs start in seconds; the browser opens on the app. Arguments go to launch.py.
# If macOS says it cannot open it: right-click → Open (once), or `chmod +x start.command`.
# Homebrew's and python.org's Pythons, which a Finder-opened Terminal may not have on its PATH:
PATH="$PATH:/opt/homebrew/bin:/usr/local/bin:/Library/Frameworks/Python.framework/Versions/Current/bin"
export PATH
cd "$(dirname "$0")" || exit 1
exec /bin/bash ./start.sh ${1+"$@"}

"""Workflows behind the tabs. No gradio here, and no torch: engines do the model work."""

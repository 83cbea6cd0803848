"""Gradio UI: one module per tab, each with `render(ctx)` building its components and `listen(ctx, parts)`
wiring its events; handlers are top-level functions wired through `events.py`, owner-only ones marked in
`owner.py`.

Only gradio here: every action calls a service on the `Studio` passed in `UIContext`.
"""

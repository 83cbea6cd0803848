"""Gradio UI: one module per tab, each with `render(ctx)` building components and wiring events.

Only gradio here: every action calls a service on the `Studio` passed in `UIContext`.
"""

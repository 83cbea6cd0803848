"""The Training tab with no job: one "No job yet.", and an empty loss plot rather than a point at 0."""
from __future__ import annotations

from lora_studio.ui import training_tab
from lora_studio.ui.common import progress_html


def test_no_job_is_said_once_and_the_loss_plot_is_empty():
    said = progress_html(None) + training_tab.stats_text(None)
    assert said.count("No job yet.") == 1
    frame = training_tab.loss_frame(None)
    assert frame.empty and list(frame.columns) == ["step", "value", "series"]
    assert str(frame["step"].dtype) == "int64" and str(frame["value"].dtype) == "float64"  # numeric axes

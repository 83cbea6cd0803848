"""The app's CSS. The Selection look keys on what the gallery renders for each image: the caption
starts with ✓ or ○ (wording.SELECTED_MARK / UNSELECTED_MARK) and Gradio writes it into the image's
`alt`, so selected and unselected images differ at a glance without any script."""

SELECTION = """
#selection-gallery .thumbnail-item.selected { --ring-color: transparent; border-color: var(--border-color-primary); }
#selection-gallery .thumbnail-lg img[alt^="○"] { opacity: .35; filter: grayscale(.9); }
#selection-gallery .thumbnail-lg:has(img[alt^="✓"]) { outline: 5px solid #16a34a; outline-offset: -5px; }
#selection-gallery .thumbnail-lg:has(img[alt^="✓"])::before {
  content: "✓"; position: absolute; top: 6px; left: 6px; z-index: 2; width: 24px; height: 24px;
  border-radius: 50%; background: #16a34a; color: #fff; font: bold 16px/24px sans-serif; text-align: center; }
#selection-gallery .thumbnail-lg:hover .caption-label {
  opacity: 1; white-space: normal; max-width: none; max-height: 100%; overflow: auto; left: 0; right: 0; }
#selection-gallery .thumbnail-item { cursor: pointer; }
"""

CSS = (
    ".ls-job{font-size:14px} .ls-cost{margin-top:4px;color:var(--body-text-color-subdued)}"
    ".ls-notice{border:1px solid #d97706;background:#fffbeb;color:#92400e;border-radius:6px;padding:6px 10px;"
    "margin:4px 0}"
    ".ls-ok{border:1px solid #16a34a;background:#f0fdf4;color:#14532d;border-radius:6px;padding:6px 10px;margin:4px 0}"
    + SELECTION
)

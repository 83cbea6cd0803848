"""Twenty-odd kinds of bad or odd image sent to /add_reference by raw HTTP (what already held in
issue 10, kept held): each is refused with its own reason or stored as a clean RGB PNG, nothing is
stored for a refused one, and no upload stays in Gradio's folder.
"""
from __future__ import annotations

import io
import os
import re
import zipfile

import pytest
from PIL import Image

from tests.app_server import running_app
from tests.conftest import noise_image
from tests.hostile_kit import raw_call
from tests.test_hostile_files import file_data, upload
from tests.test_images import png_header_only

pytestmark = pytest.mark.slow


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90°
    return encoded(noise_image(3, 64).resize((80, 40)), "JPEG", exif=exif)


def animated_gif() -> bytes:
    frames = [noise_image(i, 48).convert("P") for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    return buffer.getvalue()


def multipage_tiff() -> bytes:
    buffer = io.BytesIO()
    noise_image(1, 48).save(buffer, "TIFF", save_all=True, append_images=[noise_image(2, 48)])
    return buffer.getvalue()


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


def refused_cases() -> dict[str, tuple[bytes, str]]:
    jpeg = encoded(noise_image(size=256), "JPEG")
    good_png = encoded(noise_image(size=64), "PNG")
    broken_png = bytearray(good_png)
    broken_png[60:200] = b"\0" * 140  # inside the compressed data: the header reads, the pixels do not
    return {
        "empty.png": (b"", "not an image"),
        "text.png": (b"hello, not an image", "not an image"),
        "svg.png": (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "not an image"),
        "pdf.png": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "not an image"),
        "elf.png": (b"\x7fELF" + os.urandom(200), "not an image"),
        "zip.jpg": (zip_bytes(), "not an image"),
        "half.png": (good_png[: len(good_png) // 2], "corrupt or truncated|could not be read"),
        "third.jpg": (jpeg[: len(jpeg) // 3], "corrupt or truncated"),
        "garbled.png": (bytes(broken_png), "corrupt or truncated|could not be read"),
        "bomb.png": (png_header_only(20000, 20000), "too large|the limit is 8192"),
        "wide.png": (png_header_only(9000, 9000), "9000x9000 pixels; the limit is 8192"),
        "dot.png": (encoded(Image.new("RGB", (1, 1)), "PNG"), "only 1x1 pixels"),
        "sliver.png": (encoded(Image.new("RGB", (8, 4000)), "PNG"), "only 8x4000 pixels"),
        "icon.png": (encoded(noise_image(size=64), "ICO"), "is in ICO format, which the app does not read; use PNG, JPEG, WebP, BMP, GIF or TIFF"),
        "huge.png": (b"\x89PNG\r\n\x1a\n" + b"\0" * (50 * 1024 * 1024 + 10), "larger than 50 MB"),
    }


def kept_cases() -> dict[str, bytes]:
    transparent = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    palette = noise_image(size=64).convert("P")
    return {
        "gif.png": animated_gif(),
        "gray16.png": encoded(Image.new("I;16", (64, 64), 30000), "PNG"),
        "cmyk.jpg": encoded(noise_image(size=64).convert("CMYK"), "JPEG"),
        "palette.png": encoded(palette, "PNG", transparency=0),
        "clear.png": encoded(transparent, "PNG"),
        "exif.jpg": exif_rotated(),
        "pages.tif": multipage_tiff(),
        "webp.webp": encoded(noise_image(size=64), "WEBP"),
        "bitmap.bmp": encoded(noise_image(size=64), "BMP"),
        "chatty.png": encoded(noise_image(size=64), "PNG", pnginfo=_big_text()),
        "polyglot.png": encoded(noise_image(size=64), "PNG") + zip_bytes(),
    }


def _big_text():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "<script>alert(1)</script>" * 2000)
    return info


def test_bad_and_odd_images(tmp_path, astronaut_path):
    refused, kept = refused_cases(), kept_cases()
    assert len(refused) + len(kept) >= 22
    with running_app(tmp_path / "ws") as (studio, url):
        cid = studio.characters.create("Images")["id"]
        sent = {"good.png": astronaut_path.read_bytes(), **{name: data for name, (data, _) in refused.items()}}
        paths = upload(url, sent)
        kind, reply = raw_call(url, "add_reference", [cid, [file_data(p) for p in paths]])
        assert kind == "complete", reply
        assert len(reply[0]["added"]) == 1 and len(reply[0]["rejected"]) == len(refused)
        for (name, (_, words)), reason in zip(refused.items(), reply[0]["rejected"]):
            assert reason.startswith(name) and re.search(words, reason), (name, reason[:200])
        assert len(studio.store.find("images")) == 1  # the good one; nothing for the others
        assert not any(os.path.exists(p) for p in paths)

        paths = upload(url, kept)
        kind, reply = raw_call(url, "add_reference", [cid, [file_data(p) for p in paths]])
        assert kind == "complete" and reply[0]["rejected"] == [], reply
        assert len(reply[0]["added"]) == len(kept) and not any(os.path.exists(p) for p in paths)
        for record in studio.store.find("images", character_id=cid):
            stored = Image.open(studio.store.path(record["path"]))
            assert stored.format == "PNG" and stored.mode == "RGB"
        exif = next(r for r in studio.store.find("images") if r["original_name"] == "exif.jpg")
        assert (exif["width"], exif["height"]) == (40, 80)  # turned upright, as a viewer shows it

        kind, message = raw_call(url, "add_reference", [cid, [file_data(p) for p in upload(url, {"x.png": b"no"})]])
        assert kind == "error" and "No image was added. x.png is not an image" in message

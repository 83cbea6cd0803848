import io
import struct
import zlib

import pytest
from PIL import Image

from lora_studio.images import ImageError, open_image
from tests.conftest import noise_image


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file that claims to be huge: its header says width x height."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


def test_good_image_roundtrip(tmp_path):
    path = tmp_path / "a.png"
    noise_image().save(path)
    assert open_image(path).size == (96, 96)


def test_rgba_and_grayscale_become_rgb():
    rgba = Image.new("RGBA", (64, 64), (10, 20, 30, 0))
    assert open_image(rgba).mode == "RGB"
    buf = io.BytesIO()
    Image.new("L", (64, 64)).save(buf, "PNG")
    assert open_image(buf.getvalue()).mode == "RGB"


def test_huge_image_refused_without_decoding():
    with pytest.raises(ImageError, match="too large|limit"):
        open_image(png_header_only(20000, 20000))
    with pytest.raises(ImageError, match="9000x9000"):
        open_image(png_header_only(9000, 9000))


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        open_image(path)


def test_truncated_file(tmp_path):
    buf = io.BytesIO()
    noise_image(size=256).save(buf, "JPEG")
    with pytest.raises(ImageError, match="corrupt|could not be read"):
        open_image(buf.getvalue()[: len(buf.getvalue()) // 3])


def test_unsupported_format():
    buf = io.BytesIO()
    noise_image().save(buf, "ICO")
    with pytest.raises(ImageError, match="ICO"):
        open_image(buf.getvalue())

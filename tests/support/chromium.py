"""Open a page in headless Chromium (Debian's package) with no network at all, as a person would open the
drill's report: the DOM after its script ran, and a screenshot whose pixels can be counted."""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import zlib
from collections import Counter
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",  # as root in a container-less CI
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    # A network namespace of its own (loopback only): the browser cannot send anything off the machine.
    prefix = ["unshare", "--net"] if shutil.which("unshare") else []
    return subprocess.run([*prefix, chromium(), *FLAGS, *args], capture_output=True, text=True, timeout=timeout)


def dump_dom(page: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="queueops-chromium-") as profile:
        done = _run([f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()])
    if done.returncode != 0:
        raise RuntimeError(f"chromium --dump-dom failed (rc {done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 1100) -> Path:
    with tempfile.TemporaryDirectory(prefix="queueops-chromium-") as profile:
        done = _run([f"--user-data-dir={profile}", f"--screenshot={out}", f"--window-size={width},{height}",
                     page.resolve().as_uri()])  # fmt: skip
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"chromium --screenshot failed (rc {done.returncode}): {done.stderr[-2000:]}")
    return out


def png_pixels(path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    offset, idat, header = 8, b"", None
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, height, depth, color, _compression, _filter, interlace = header
    if depth != 8 or color not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, color type {color}, interlace {interlace}")
    channels = 4 if color == 6 else 3
    raw, stride = zlib.decompress(idat), width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(line)
        previous = line
    pixels = [tuple(row[x * channels : x * channels + 3]) for row in rows for x in range(width)]
    return width, height, pixels


def colour_counts(path: Path) -> Counter:
    return Counter(png_pixels(path)[2])


def hex_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i : i + 2], 16) for i in (0, 2, 4))

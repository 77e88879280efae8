"""Debian's Chromium, headless, as the page's browser tests and ``benchmarks/web_speed.py`` run
it through Playwright (Playwright's own browser download is never used)."""

from __future__ import annotations

import shutil

# No sandbox (containers), no GPU, nothing fetched in the background, sound without a click.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]


def find_chromium() -> str | None:
    """The Chromium on the PATH (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None

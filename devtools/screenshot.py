"""A page in headless Chromium: what it shows, its console errors, and a screenshot.

    python -m devtools.screenshot reports/review.html --png docs/review.png

Debian's Chromium (`apt-get install chromium`) driven by Playwright (`playwright` from PyPI,
no browser download: it launches /usr/bin/chromium). Used by the review page's test and to
refresh the screenshot in docs/.
"""

from __future__ import annotations

import json
from pathlib import Path


def screenshot(page: str | Path, png: str | Path, width: int = 1280, height: int = 1600) -> dict:
    """Open the page in headless Chromium (Debian's /usr/bin/chromium through Playwright) and
    save a screenshot; returns what the browser saw: receipts shown and console errors."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path(),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        tab = browser.new_page(viewport={"width": width, "height": height})
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(Path(page).resolve().as_uri())
        shown = tab.locator("section.receipt").count()
        images = tab.evaluate(
            "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length"
        )
        tab.screenshot(path=str(png))
        browser.close()
    return {"receipts": shown, "images_loaded": images, "console_errors": errors}


def chromium_path() -> str:
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    return found


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Screenshot a review page in headless Chromium.")
    ap.add_argument("page", nargs="?", default="reports/review.html")
    ap.add_argument("--png", default="docs/review.png")
    args = ap.parse_args(argv)
    print(json.dumps(screenshot(args.page, args.png)))


if __name__ == "__main__":
    main()

"""Headless Chromium (Debian's, driven by Playwright) for the dashboard's browser tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

ARTIFACTS = Path(os.environ.get("NOTIFIER_TEST_ARTIFACTS", "build/test-artifacts"))
CHROMIUM = os.environ.get("CHROMIUM", "chromium")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which(CHROMIUM)
    assert executable, f"{CHROMIUM} not found: `make test` installs Debian's chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        await browser.close()


async def save_screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot in ``ARTIFACTS``."""
    path = ARTIFACTS / name
    shot = await page.screenshot(path=path, full_page=True)
    assert len(shot) > 10_000
    return path

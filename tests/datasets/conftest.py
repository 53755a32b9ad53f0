"""A drawn image set for the dataset tests: varied sizes and layouts, and files no decoder can use."""

from __future__ import annotations

from pathlib import Path

import pytest
from drawn import draw_image_set


@pytest.fixture(scope="session")
def image_set(tmp_path_factory) -> Path:
    """The drawn set: 20 usable images and 3 bad files (read-only for tests)."""
    return draw_image_set(tmp_path_factory.mktemp("drawn") / "images")

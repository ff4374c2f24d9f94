"""What a wheel or sdist carries about itself: one version, from Cargo.toml, everywhere."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import workhorse as wh
from workhorse import _core

CARGO_TOML = Path(__file__).resolve().parent.parent / "Cargo.toml"


def test_version_is_the_crate_version_in_module_and_metadata() -> None:
    crate = re.search(r'^version = "([^"]+)"$', CARGO_TOML.read_text(), re.M)
    assert crate is not None
    assert wh.__version__ == _core.__version__ == crate.group(1)
    assert importlib.metadata.version("workhorse") == wh.__version__

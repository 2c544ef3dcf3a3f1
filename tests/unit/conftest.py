"""Fixtures for view and index tests: a temporary root and an app over it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from pypid.config import defaults
from pypid.index import Index
from pypid.storage import PackageRoot
from pypid.web import assemble, create_app

AppFactory = Callable[..., Flask]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "packages"
    path.mkdir()
    return path


@pytest.fixture
def make_app(root: Path) -> Iterator[AppFactory]:
    """``make_app(server={"url_prefix": "/pypi"}, upstream={"mode": "off"})``."""
    made: list[Index] = []

    def factory(**sections: dict[str, Any]) -> Flask:
        config = defaults()
        config = dataclasses.replace(
            config, storage=dataclasses.replace(config.storage, root=str(root)))
        for name, changes in sections.items():
            config = dataclasses.replace(
                config, **{name: dataclasses.replace(getattr(config, name), **changes)})
        index = Index(PackageRoot(root))
        index.load()
        made.append(index)
        app = create_app(config, services=assemble(config, index=index))
        app.testing = True
        return app

    yield factory
    for index in made:
        index.close()

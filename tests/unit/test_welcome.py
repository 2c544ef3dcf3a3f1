"""The welcome page tells a newcomer all of it: install, the venv, upload with a login,
and where names that are not here go."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.conftest import AppFactory


def page(make_app: AppFactory, **settings: dict[str, object]) -> str:
    response = make_app(**settings).test_client().get("/", base_url="http://index.example:8080")
    assert response.status_code == 200
    return " ".join(response.get_data(as_text=True).split())


def test_upload_line_names_the_login(make_app: AppFactory, root: Path) -> None:
    text = page(make_app)
    assert "twine upload --repository-url http://index.example:8080/ -u NAME dist/*" in text
    assert "Uploads need a login" in text
    assert "pypid user add NAME" in text
    assert "./scripts/pypid user add NAME" in text


def test_open_uploads_say_so(make_app: AppFactory, root: Path) -> None:
    text = page(make_app, auth={"protect": []})
    assert "Uploads need no login" in text
    assert "Uploads need a login" not in text


def test_venv_and_pip_config(make_app: AppFactory, root: Path) -> None:
    text = page(make_app)
    assert "python3 -m venv ~/venv &amp;&amp; . ~/venv/bin/activate" in text
    assert "pip config set global.index-url http://index.example:8080/simple/" in text
    assert "--trusted-host index.example:8080" in text


@pytest.mark.parametrize(("mode", "expected"), [
    ("redirect", "A package that is not here is looked up on"),
    ("off", "any other name answers 404"),
], ids=["redirect", "off"])
def test_unknown_names(make_app: AppFactory, root: Path, mode: str, expected: str) -> None:
    text = page(make_app, upstream={"mode": mode})
    assert expected in text


def test_protected_reads_mention_the_login(make_app: AppFactory, root: Path) -> None:
    assert "Reading this index needs a login" in page(make_app, auth={"protect": ["upload",
                                                                             "download"]})
    assert "Reading this index needs a login" not in page(make_app)

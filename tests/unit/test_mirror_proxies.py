"""Which proxy the mirror's upstream requests take, from the standard environment."""

from __future__ import annotations

import base64

import pytest

from pypid.mirror.proxies import Proxy, ProxyError, proxy_for, proxy_settings


def _basic(login: str) -> str:
    return "Basic " + base64.b64encode(login.encode()).decode()


@pytest.mark.parametrize(("environ", "scheme", "netloc", "want"), [
    pytest.param({}, "https", "pypi.org", None, id="no-variables"),
    pytest.param({"https_proxy": "http://proxy:3128"}, "https", "pypi.org",
                 Proxy("proxy", 3128), id="https"),
    pytest.param({"https_proxy": "http://proxy:3128"}, "http", "pypi.org", None,
                 id="https-only-not-for-http"),
    pytest.param({"http_proxy": "proxy:8080"}, "http", "idx:8000", Proxy("proxy", 8080),
                 id="http-no-scheme"),
    pytest.param({"HTTPS_PROXY": "http://proxy"}, "https", "pypi.org", Proxy("proxy", 80),
                 id="upper-case-default-port"),
    pytest.param({"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"}, "https",
                 "pypi.org", Proxy("low", 1), id="lower-case-wins"),
    pytest.param({"https_proxy": "", "HTTPS_PROXY": "http://up:2"}, "https", "pypi.org",
                 Proxy("up", 2), id="empty-is-unset"),
    pytest.param({"https_proxy": "http://corp%20user:p%40ss@proxy:3128"}, "https",
                 "pypi.org", Proxy("proxy", 3128, _basic("corp user:p@ss")), id="login"),
    pytest.param({"https_proxy": "http://proxy:3128", "no_proxy": "pypi.org"}, "https",
                 "pypi.org", None, id="no-proxy-host"),
    pytest.param({"https_proxy": "http://proxy:3128", "no_proxy": ".org"}, "https",
                 "files.pythonhosted.org", None, id="no-proxy-suffix"),
    pytest.param({"https_proxy": "http://proxy:3128", "NO_PROXY": "example.com, *"},
                 "https", "pypi.org", Proxy("proxy", 3128), id="star-only-alone"),
    pytest.param({"https_proxy": "http://proxy:3128", "no_proxy": "*"}, "https",
                 "pypi.org", None, id="no-proxy-star"),
    pytest.param({"https_proxy": "http://proxy:3128", "no_proxy": "index:8443"}, "https",
                 "index:8443", None, id="no-proxy-host-and-port"),
    pytest.param({"https_proxy": "http://proxy:3128", "no_proxy": "notpypi.org"}, "https",
                 "pypi.org", Proxy("proxy", 3128), id="no-proxy-no-partial-match"),
])
def test_proxy_for(environ: dict[str, str], scheme: str, netloc: str,
                   want: Proxy | None) -> None:
    assert proxy_for(scheme, netloc, proxy_settings(environ)) == want  # login compared too


@pytest.mark.parametrize(("value", "message"), [
    pytest.param("https://u:secret@proxy:3128", "https:// proxy is not supported", id="tls"),
    pytest.param("socks5://proxy:1080", "socks5:// proxy is not supported", id="socks"),
    pytest.param("http://proxy:port", "port is not a number", id="port"),
    pytest.param("http://:3128", "no proxy host", id="host"),
])
def test_unusable_proxy_names_the_variable_not_the_password(value: str, message: str) -> None:
    with pytest.raises(ProxyError) as caught:
        proxy_for("https", "pypi.org", proxy_settings({"https_proxy": value}))
    assert str(caught.value).startswith("https_proxy: ") and message in str(caught.value)
    assert "secret" not in str(caught.value)


def test_login_is_not_in_the_repr() -> None:
    proxy = proxy_for("https", "pypi.org", {"https": "http://u:secret@proxy:3128"})
    assert "secret" not in repr(proxy) and proxy is not None and proxy.where == "proxy:3128"

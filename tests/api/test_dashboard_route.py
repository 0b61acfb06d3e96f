"""GET /dashboard and its two files: served from the package, open without a token (the page
shell holds no data), under a Content-Security-Policy that lets no remote or inline script run."""

from __future__ import annotations

import re
from collections.abc import Callable

from service.config import Settings
from tests.conftest import running_app


async def test_page_and_files_are_served_with_a_strict_policy(
    make_settings: Callable[..., Settings],
) -> None:
    async with running_app(make_settings(api_token="secret-1")) as c:
        page = await c.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = dict(part.strip().split(" ", 1)
                      for part in page.headers["content-security-policy"].split(";"))
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == "'self'" and policy["connect-src"] == "'self'"
        assert "secret-1" not in page.text
        # Scripts and styles: only this origin's files, no inline script, nothing remote.
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
        assert [re.search(r'src="([^"]+)"', attrs).group(1) for attrs, _ in scripts] == [  # type: ignore[union-attr]
            "/dashboard/dashboard.js"]
        assert all(body.strip() == "" for _, body in scripts)
        assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
        for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            asset = await c.get(f"/dashboard/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
            assert len(asset.content) > 500
        assert "http://" not in (await c.get("/dashboard/dashboard.js")).text.replace(
            "http://www.w3.org/2000/svg", "")  # the SVG namespace is a name, not a fetch
        missing = await c.get("/dashboard/secrets.py")
        assert missing.status_code == 404 and "secrets.py" in missing.json()["detail"]
        # Its data calls are what the token protects.
        assert (await c.get("/v1/stats")).status_code == 401

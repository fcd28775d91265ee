"""The page at `/`: convert audio in a browser, for people who do not write code. It is one
more client of the public /v2 API (static/page.js): it keeps the API key in the browser's
local storage and sends it in the X-Oc-Api-Key header, as any client does. Plain HTML, CSS
and JavaScript served from this package: no build step, nothing from anywhere else."""
from __future__ import annotations

from flask import Blueprint, Response, render_template

blp = Blueprint("page", __name__, template_folder="templates", static_folder="static", static_url_path="/page")

# Only the service itself: its own scripts, styles, images and API; no inline script or style.
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@blp.get("/")
def page() -> Response:
    answer = Response(render_template("page.html"), mimetype="text/html")
    answer.headers["Content-Security-Policy"] = PAGE_POLICY
    return answer

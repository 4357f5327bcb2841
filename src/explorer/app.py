"""The explorer: a page on 127.0.0.1 to click through the network you just trained.

    python -m src.explorer                 # http://127.0.0.1:8000 for models/best.pt
    python -m src.explorer --port 8123

Flask serves the page (src/explorer/static/: plain HTML, CSS and JavaScript, nothing from the
network) and a small JSON API over src/explorer/compute.py. Bad input gets a message on the page, never a
crash: no model yet, a checkpoint of another class list, a non-image or oversized upload.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from flask import Blueprint, Flask, current_app, jsonify, request, send_from_directory

from src.cli import whole_number
from src.errors import CheckpointError, DataError
from src.explorer import compute

PAGE = Path(__file__).with_name("static")


bp = Blueprint("explorer", __name__)


def create_app(root: Path = Path("."), lab: compute.Lab | None = None) -> Flask:
    """The Flask app for the repository at `root` (the lab loads on the first request that needs it)."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = compute.MAX_UPLOAD_BYTES + 64 * 1024  # the file plus the form around it
    app.extensions["lab"] = {"root": Path(root), "lab": lab}
    app.register_blueprint(bp)
    app.register_error_handler(
        413, lambda _: (jsonify(error=f"the upload is too large: at most {compute.MAX_UPLOAD_BYTES // 2**20} MB"), 413)
    )
    app.register_error_handler(404, _not_found)
    app.register_error_handler(405, _wrong_method)
    return app


def _api_routes() -> str:
    rules = sorted({r.rule for r in current_app.url_map.iter_rules() if r.rule.startswith("/api/")})
    return ", ".join(rules)


def _not_found(_exc: Exception):
    # JSON like every other answer, so the page and scripts read one line instead of Flask's HTML
    answers = f"/, /page/<file> and {_api_routes()}"
    return jsonify(error=f"{request.path}: no such address; the explorer answers {answers}"), 404


def _wrong_method(exc: Exception):
    allowed = ", ".join(sorted(set(getattr(exc, "valid_methods", None) or ["GET"]) - {"HEAD", "OPTIONS"}))
    return jsonify(error=f"{request.path}: {request.method} is not allowed here; use {allowed}"), 405


def get_lab() -> compute.Lab:
    state = current_app.extensions["lab"]
    if state["lab"] is None:
        state["lab"] = compute.Lab.load(state["root"])  # CheckpointError / DataError explain what is missing
    return state["lab"]


def api(fn: Callable) -> Callable:
    """JSON out; bad input → 400 with the message, a missing or mismatched model → 409."""

    def wrapped(*a, **k):
        try:
            return jsonify(fn(*a, **k))
        except compute.InputError as exc:
            return jsonify(error=str(exc)), 400
        except (CheckpointError, DataError) as exc:
            return jsonify(error=str(exc)), 409

    wrapped.__name__ = fn.__name__
    return wrapped


def json_body() -> dict:
    """The request's JSON object, or {} (no body, not JSON, or JSON that is not an object)."""
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def image_from_request() -> tuple[torch.Tensor, int | None]:
    """The image a call is about and its test index: an upload or a 32×32 PNG the page holds (no
    index), or a test image. A bad index keeps its own message from compute.test_index: catching
    ValueError here would swallow it, InputError being a ValueError."""
    lab = get_lab()
    if "file" in request.files:
        return compute.decode_upload(request.files["file"].read()), None
    body = json_body()
    if body.get("image"):
        return compute.decode_png32(body["image"]), None
    if "index" in body:
        raw = body["index"]
    elif "index" in request.args:
        raw = request.args["index"]
    else:
        raise compute.InputError(f"say which image: a test index (0–{len(lab.test_y) - 1}), or upload a PNG/JPEG")
    index = compute.test_index(lab, raw)
    return compute.test_image(lab, index), index


def int_arg(name: str, default: int) -> int:
    """A whole-number query argument; anything else is an InputError naming it."""
    raw = request.args.get(name)
    value = default if raw is None else compute.whole_number(raw)
    if value is None:
        raise compute.InputError(f"{name} must be a whole number, not {raw[:40]!r}")
    return value


@bp.get("/")
def index():
    return send_from_directory(PAGE, "index.html")


@bp.get("/page/<path:name>")
def page_file(name: str):
    return send_from_directory(PAGE, name)


@bp.get("/api/info")
@api
def info():
    lab = get_lab()
    return {
        "model": lab.model_name,
        "classes": lab.classes,
        "test_images": int(len(lab.test_y)),
        "test_acc": float((lab.pred == lab.test_y).mean()),  # rounded once, by the page (as the report does)
    }


@bp.get("/api/images")
@api
def images():
    a = request.args
    return compute.list_images(
        get_lab(),
        a.get("cls") or None,
        a.get("which", "all"),
        a.get("order", "index"),
        int_arg("page", 0),
        int_arg("per", 48),
    )


@bp.post("/api/analyse")
@api
def analyse():
    return compute.analyse(get_lab(), *image_from_request())


@bp.post("/api/gradcam")
@api
def gradcam():
    return compute.gradcam(get_lab(), image_from_request()[0], json_body().get("cls", ""))


@bp.post("/api/conv")
@api
def conv():
    body = json_body()
    c, i, j = (compute.whole_number(body.get(k)) for k in ("channel", "i", "j"))
    if c is None or i is None or j is None:
        raise compute.InputError("give channel, i and j of the first conv layer's output (whole numbers)")
    return compute.conv_sum(get_lab(), image_from_request()[0], c, i, j)


@bp.get("/api/class/<name>")
@api
def class_view(name: str):
    return compute.class_view(get_lab(), name)


@bp.get("/api/filters")
@api
def filters():
    state = current_app.extensions["lab"]
    if "filters" not in state:
        lab = get_lab()
        state["filters"] = compute.filters(lab, responses=compute.recorded_responses(state["root"], lab))
    return state["filters"]


# a TCP port: 0 would make the server pick another, and the rest fail
_port = whole_number(1, 65535)


def _unusable(host: str, port: int = 0) -> OSError | None:
    """Why the server could not listen on `host` (not an address, or not one of this machine's) or,
    with `port`, on that port there (another program has it, or it needs administrator rights)."""
    from werkzeug.serving import select_address_family  # the family the server will listen with

    try:
        family, kind, _, _, address = socket.getaddrinfo(
            host, port, family=select_address_family(host, port), type=socket.SOCK_STREAM
        )[0]
        with socket.socket(family, kind) as s:
            # as the server binds: a closed server's port is free again; on Windows SO_REUSEADDR would
            # take a port that another program listens on, so there the test asks for it alone
            exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)
            s.setsockopt(socket.SOL_SOCKET, exclusive or socket.SO_REUSEADDR, 1)
            s.bind(address)  # port 0: tries the address, not the port
    except OSError as exc:
        return exc
    return None


def _port_trouble(exc: OSError, port: int) -> str:
    """The line for a port the server could not listen on."""
    why = {
        errno.EADDRINUSE: " (another program, or an explorer already running, listens there)",
        errno.EACCES: " (ports below 1024 need administrator rights)",
    }.get(exc.errno, "")
    return f"--port {port}: {exc.strerror or exc}{why}; try another, e.g. --port {port % 65535 + 1}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.explorer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=_port, default=8000, help="1-65535")
    ap.add_argument("--root", type=Path, default=Path("."), help="the repository (models/, data/, plots/)")
    args = ap.parse_args(argv)
    if not (args.root / "dvc.yaml").is_file():  # a mistyped --root would serve "run dvc repro first"
        print(f"explore: error: --root {args.root}: not this project's repository (no dvc.yaml there)", file=sys.stderr)
        return 2
    if (exc := _unusable(args.host)) is not None:  # else the server's start prints only the OS's words
        why = exc.strerror or exc
        print(f"explore: error: --host {args.host}: {why}; allowed: an address of this machine", file=sys.stderr)
        return 2
    if (exc := _unusable(args.host, args.port)) is not None:  # else the URL printed first, as if it served
        print(f"explore: error: {_port_trouble(exc, args.port)}", file=sys.stderr)
        return 2
    shown = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address goes in brackets in a URL
    print(f"explore: http://{shown}:{args.port}  (Ctrl-C to stop)", flush=True)
    create_app(args.root).run(host=args.host, port=args.port, debug=False, threaded=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

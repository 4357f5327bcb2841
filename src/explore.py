"""The explorer: a page on 127.0.0.1 to click through the network you just trained.

    python -m src.explore                 # http://127.0.0.1:8000 for models/best.pt
    python -m src.explore --port 8123

Flask serves the page (src/explorer_page/: plain HTML, CSS and JavaScript, nothing from the
network) and a small JSON API over src/explorer.py. Bad input gets a message on the page, never a
crash: no model yet, a checkpoint of another class list, a non-image or oversized upload.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional

from flask import Blueprint, Flask, current_app, jsonify, request, send_from_directory

from src import explorer as E
from src.errors import CheckpointError, DataError

PAGE = Path(__file__).with_name("explorer_page")


bp = Blueprint("explorer", __name__)


def create_app(root: Path = Path("."), lab: Optional[E.Lab] = None) -> Flask:
    """The Flask app for the repository at `root` (the lab loads on the first request that needs it)."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = E.MAX_UPLOAD_BYTES + 64 * 1024  # the file plus the form around it
    app.extensions["lab"] = {"root": Path(root), "lab": lab}
    app.register_blueprint(bp)
    app.register_error_handler(413, lambda _: (jsonify(error=f"the upload is too large: at most "
                                                            f"{E.MAX_UPLOAD_BYTES // 2**20} MB"), 413))
    return app


def get_lab() -> E.Lab:
    state = current_app.extensions["lab"]
    if state["lab"] is None:
        state["lab"] = E.Lab.load(state["root"])  # CheckpointError / DataError explain what is missing
    return state["lab"]


def api(fn: Callable) -> Callable:
    """JSON out; bad input → 400 with the message, a missing or mismatched model → 409."""
    def wrapped(*a, **k):
        try:
            return jsonify(fn(*a, **k))
        except E.InputError as exc:
            return jsonify(error=str(exc)), 400
        except (CheckpointError, DataError) as exc:
            return jsonify(error=str(exc)), 409
    wrapped.__name__ = fn.__name__
    return wrapped


def image_from_request():
    """The image a call is about: an upload, a 32×32 PNG the page holds, or a test index."""
    lab = get_lab()
    if "file" in request.files:
        return E.decode_upload(request.files["file"].read())
    body = request.get_json(silent=True) or {}
    if body.get("image"):
        return E.decode_png32(body["image"])
    try:
        return E.test_image(lab, int(body.get("index", request.args.get("index", -1))))
    except (TypeError, ValueError):
        raise E.InputError("say which image: a test index, or upload a PNG/JPEG") from None


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
    return {"model": lab.model_name, "classes": lab.classes, "test_images": int(len(lab.test_y)),
            "test_acc": round(float((lab.pred == lab.test_y).mean()), 4)}


@bp.get("/api/images")
@api
def images():
    a = request.args
    return E.list_images(get_lab(), a.get("cls") or None, a.get("which", "all"), a.get("order", "index"),
                         int(a.get("page", 0)), int(a.get("per", 48)))


@bp.post("/api/analyse")
@api
def analyse():
    return E.analyse(get_lab(), image_from_request())


@bp.post("/api/gradcam")
@api
def gradcam():
    return E.gradcam(get_lab(), image_from_request(), (request.get_json(silent=True) or {}).get("cls", ""))


@bp.post("/api/conv")
@api
def conv():
    body = request.get_json(silent=True) or {}
    try:
        c, i, j = int(body["channel"]), int(body["i"]), int(body["j"])
    except (KeyError, TypeError, ValueError):
        raise E.InputError("give channel, i and j of the first conv layer's output") from None
    return E.conv_sum(get_lab(), image_from_request(), c, i, j)


@bp.get("/api/class/<name>")
@api
def class_view(name: str):
    return E.class_view(get_lab(), name)


@bp.get("/api/filters")
@api
def filters():
    state = current_app.extensions["lab"]
    if "filters" not in state:
        state["filters"] = E.filters(get_lab())
    return state["filters"]


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--root", type=Path, default=Path("."), help="the repository (models/, data/, plots/)")
    args = ap.parse_args(argv)
    print(f"explore: http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
    create_app(args.root).run(host=args.host, port=args.port, debug=False, threaded=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

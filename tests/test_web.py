"""The web viewer: its HTTP API through FastAPI's TestClient, and the page end to end in headless
Chromium driven by Playwright (skipped when either is missing, unless RNNCODEC_REQUIRE_BROWSER=1).
All of them use the tiny model of conftest.py, so that they run in seconds.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from rnncodec import decompress, info
from rnncodec.cli import main
from rnncodec.errors import ModelError
from rnncodec.web.app import create_app
from rnncodec.web.cache import ResultCache
from rnncodec.web.limits import Limits
from rnncodec.web.sample import sample_image

LIMITS = Limits(max_upload_bytes=100 * 1024, max_pixels=20_000, cache_bytes=10 << 20)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tiny_model: str) -> TestClient:
    return TestClient(create_app(tiny_model, LIMITS))


def encode(client: TestClient, data: bytes | None = None, **form: Any) -> Any:
    files = {"file": ("photo.png", data, "image/png")} if data is not None else None
    return client.post("/api/encode", files=files, data=form)


# --- API ---------------------------------------------------------------------------------------

def test_page_and_assets_are_served_from_memory_by_name(client: TestClient) -> None:
    assert "<title>rnncodec viewer</title>" in client.get("/").text
    js = client.get("/assets/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for name in ("nothing.js", "..%2F..%2Fpyproject.toml", "%2Fetc%2Fpasswd"):
        assert client.get(f"/assets/{name}").status_code == 404


def test_upload_gives_every_step_with_peers_no_larger(client: TestClient, tiny_model: str) -> None:
    r = encode(client, png(sample_image(96, 64)), target="iterations", value="3")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"], body["mode"], body["model"]) == (96, 64, "RGB", "tiny")
    steps = body["steps"]
    assert [s["iteration"] for s in steps] == [1, 2, 3]
    sizes = [s["rnnc"]["bytes"] for s in steps]
    assert sizes == sorted(sizes) and sizes[0] > 0
    for s in steps:
        assert s["rnnc"]["bpp"] == pytest.approx(s["rnnc"]["bytes"] * 8 / (96 * 64))
        for peer in ("jpeg", "webp"):
            assert s[peer] is None or s[peer]["bytes"] <= s["rnnc"]["bytes"]
    file = client.get(f"/api/results/{body['id']}/steps/2/rnnc")
    assert file.headers["content-disposition"] == 'attachment; filename="rnncodec-2it.rnnc"'
    assert info(file.content).iterations == 2 and info(file.content).bytes == sizes[1]
    shown = Image.open(io.BytesIO(client.get(f"/api/results/{body['id']}/steps/2/png").content))
    assert np.array_equal(np.asarray(shown), np.asarray(decompress(file.content, model=tiny_model)))


def test_peer_images_and_original_are_served(client: TestClient) -> None:
    body = encode(client, png(sample_image(96, 64)), value="16").json()
    rid, last = body["id"], body["steps"][-1]
    for peer, fmt in (("jpeg", "JPEG"), ("webp", "WEBP")):
        r = client.get(f"/api/results/{rid}/steps/16/{peer}")
        assert r.headers["content-type"] == f"image/{peer}"
        assert Image.open(io.BytesIO(r.content)).format == fmt
        assert len(r.content) == last[peer]["bytes"]
    assert Image.open(io.BytesIO(client.get(f"/api/results/{rid}/original").content)).size == (
        96, 64)
    download = client.get(f"/api/results/{rid}/steps/1/png?download=1")
    assert "attachment" in download.headers["content-disposition"]


@pytest.mark.parametrize(("target", "value", "steps"), [
    ("psnr", "1", 1), ("psnr", "99", 16), ("ms_ssim", "0.01", 1)])
def test_quality_targets_stop_at_the_first_step_reaching_them(
        client: TestClient, target: str, value: str, steps: int) -> None:
    r = encode(client, png(sample_image(64, 48)), target=target, value=value)
    assert len(r.json()["steps"]) == steps


def test_bpp_target_keeps_the_file_within_the_rate(client: TestClient) -> None:
    body = encode(client, png(sample_image(96, 64)), target="bpp", value="1.5").json()
    assert 1 <= len(body["steps"]) <= 16
    assert body["steps"][-1]["rnnc"]["bpp"] <= 1.5 or len(body["steps"]) == 1


def test_sample_image_needs_no_upload(tiny_model: str) -> None:
    roomy = TestClient(create_app(tiny_model, Limits(max_pixels=10 ** 6)))
    r = roomy.post("/api/encode", data={"sample": "true", "value": "1"})
    assert r.status_code == 200 and (r.json()["width"], r.json()["height"]) == (384, 256)


@pytest.mark.parametrize(("form", "message"), [
    ({"value": "17"}, "iterations must be a whole number from 1 to 16"),
    ({"value": "2.5"}, "iterations must be a whole number"),
    ({"target": "bpp", "value": "-1"}, "bpp must be positive"),
    ({"target": "psnr", "value": "0"}, "psnr must be positive"),
    ({"target": "bpp", "value": "inf"}, "value: Input should be a finite number"),
    ({"target": "ms_ssim", "value": "1"}, "ms_ssim must be between 0 and 1"),
    ({"target": "size", "value": "1"}, "target: Input should be"),
    ({"value": "many"}, "value: Input should be a valid number"),
])
def test_bad_targets_are_refused_with_a_message(client: TestClient, form: dict[str, str],
                                                message: str) -> None:
    r = encode(client, png(sample_image(32, 32)), **form)
    assert r.status_code == 422 and message in r.json()["detail"]


def test_uploads_over_the_byte_limit_are_refused(client: TestClient) -> None:
    just_over = encode(client, b"\0" * (LIMITS.max_upload_bytes + 1))
    far_over = encode(client, b"\0" * (LIMITS.max_upload_bytes * 3))
    streamed = client.post("/api/encode", content=iter([b"x" * 50_000] * 6),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    for r in (just_over, far_over, streamed):
        assert r.status_code == 413
        assert r.json()["detail"] == "the upload is larger than the limit of 100 KB"


def test_images_over_the_pixel_limit_are_refused_before_decoding(client: TestClient) -> None:
    r = encode(client, png(Image.new("L", (200, 101))))
    assert r.status_code == 422
    assert r.json()["detail"] == ("the image has 200×101 = 20,200 pixels; this server accepts "
                                  "at most 20,000")


def test_content_is_sniffed_not_the_file_name(client: TestClient) -> None:
    lying = client.post("/api/encode", data={"value": "1"},
                        files={"file": ("photo.png", b"<svg xmlns='x'/>", "image/png")})
    assert lying.status_code == 415
    assert lying.json()["detail"] == "the upload is not a PNG, JPEG, WEBP, GIF, BMP or TIFF image"
    jpeg = io.BytesIO()
    sample_image(40, 30).save(jpeg, format="JPEG")
    modest = client.post("/api/encode", data={"value": "1"},
                         files={"file": ("notes.txt", jpeg.getvalue(), "text/plain")})
    assert modest.status_code == 200 and modest.json()["width"] == 40


def test_damaged_empty_and_missing_uploads_get_a_message(client: TestClient) -> None:
    whole = png(sample_image(64, 48))
    damaged = encode(client, whole[:len(whole) // 2])
    assert damaged.status_code == 422 and "cannot decode" in damaged.json()["detail"]
    assert encode(client, b"").json()["detail"] == "the uploaded file is empty"
    missing = client.post("/api/encode", data={"value": "1"})
    assert missing.json()["detail"] == "choose an image file, or use the sample image"


def test_unknown_results_and_steps_are_404(client: TestClient) -> None:
    rid = encode(client, png(sample_image(32, 32)), value="2").json()["id"]
    assert "no longer kept" in client.get("/api/results/nope/steps/1/png").json()["detail"]
    assert client.get(f"/api/results/{rid}/steps/3/png").status_code == 404
    assert client.get(f"/api/results/{rid}/steps/0/rnnc").status_code == 404
    assert client.get(f"/api/results/{rid}/steps/1/gif").status_code == 422


def test_cache_drops_least_recently_used_beyond_its_byte_bound() -> None:
    cache: ResultCache[Any] = ResultCache(max_bytes=250)
    a, b, c = (SimpleNamespace(nbytes=100) for _ in range(3))
    ka, kb = cache.add(a), cache.add(b)
    assert cache.get(ka) is a  # now b is the least recently used
    kc = cache.add(c)
    assert (cache.get(kb), cache.get(ka), cache.get(kc)) == (None, a, c)
    huge = SimpleNamespace(nbytes=1000)
    assert cache.get(cache.add(huge)) is huge and len(cache) == 1
    assert len({ka, kb, kc}) == 3 and len(ka) >= 20


def test_create_app_refuses_an_unknown_model() -> None:
    with pytest.raises(ModelError):
        create_app("no-such-model")


def test_serve_command_is_registered() -> None:
    out = CliRunner().invoke(main, ["serve", "--help"]).output
    assert "--host" in out and "--port" in out and "127.0.0.1" in out


# --- Browser -----------------------------------------------------------------------------------

def _missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (bash .ci/install-browser.sh installs it)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing_browser()
    if reason is not None:
        if os.environ.get("RNNCODEC_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RNNCODEC_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tiny_model: str) -> Iterator[str]:
    """The app served by uvicorn on a free port, in a thread of this process."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    limits = Limits(max_upload_bytes=LIMITS.max_upload_bytes, max_pixels=200_000)
    srv = uvicorn.Server(uvicorn.Config(create_app(tiny_model, limits), log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server)
    yield page
    context.close()


def not_blank(screenshot: bytes) -> bool:
    return float(np.asarray(Image.open(io.BytesIO(screenshot)).convert("L")).std()) > 10


def test_browser_upload_slide_and_download(page: Any, tmp_path: Path, tiny_model: str) -> None:
    from playwright.sync_api import expect

    photo = tmp_path / "photo.png"
    sample_image(96, 64).save(photo)
    page.set_input_files("#file", photo)
    page.fill("#value", "4")
    page.click("#compress")
    expect(page.locator("#step-label")).to_have_text("4 / 4")
    page.focus("#step")
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#step-label")).to_have_text("2 / 4")
    rid = page.get_attribute("#download-rnnc", "href").split("/")[2]
    expect(page.locator("#img-rnnc")).to_have_attribute("src", f"api/results/{rid}/steps/2/png")
    expect(page.locator("#steps tr.current td").first).to_have_text("2")
    page.wait_for_function("document.getElementById('img-rnnc').naturalWidth === 96")
    with page.expect_download() as rnnc:
        page.click("#download-rnnc")
    data = Path(rnnc.value.path()).read_bytes()
    assert rnnc.value.suggested_filename == "rnncodec-2it.rnnc" and info(data).iterations == 2
    with page.expect_download() as decoded:
        page.click("#download-png")
    assert np.array_equal(np.asarray(Image.open(decoded.value.path())),
                          np.asarray(decompress(data, model=tiny_model)))
    assert not_blank(page.locator("#img-rnnc").screenshot())
    assert not_blank(page.screenshot(full_page=True))


def test_browser_sample_and_crop(page: Any) -> None:
    from playwright.sync_api import expect

    page.fill("#value", "2")
    page.click("#use-sample")
    expect(page.locator("#step-label")).to_have_text("2 / 2")
    page.wait_for_function("document.getElementById('img-rnnc').naturalWidth === 384")
    page.locator("#img-rnnc").click(position={"x": 150, "y": 120})
    crop = page.locator(".crops canvas").nth(1)
    assert not_blank(crop.screenshot())
    expect(page.locator("#error")).to_be_hidden()


def test_browser_shows_server_errors(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    fake = tmp_path / "fake.png"
    fake.write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    page.set_input_files("#file", fake)
    page.click("#compress")
    expect(page.locator("#error")).to_have_text(
        "the upload is not a PNG, JPEG, WEBP, GIF, BMP or TIFF image")
    expect(page.locator("#results")).to_be_hidden()

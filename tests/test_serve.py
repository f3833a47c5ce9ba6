"""The HTTP server: FastAPI's test client on good and bad requests, uploads, limits, and the web page in headless Chromium.

The checkpoints are freshly initialised models whose manifests record the real MiniLM (and
eGeMAPS) extractors: the server's behaviour does not depend on what the model learnt, and
the page's labels are compared with the Python API's on the same conversation.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from media_helpers import tone, untrained_checkpoint

pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install 'merkit[serve]'")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")
pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")

from fastapi.testclient import TestClient  # noqa: E402

import merkit  # noqa: E402
from merkit.deadlines import check_deadline  # noqa: E402
from merkit.inference import parse_lines  # noqa: E402
from merkit.serve import ServeLimits, create_app  # noqa: E402
from conftest import serving  # noqa: E402

LIMITS = ServeLimits(max_utterances=8, max_upload_mb=0.2, max_media_seconds=2.0)
CONVERSATION = "Ana: You will not believe it, I got the job!\nBen: You broke my phone and lied about it!\nAna: The keys are on the table."


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    checkpoint = untrained_checkpoint(tmp_path_factory.mktemp("text") / "ckpt", {"text": "minilm"})
    with merkit.load(checkpoint) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, LIMITS)) as test_client:
        yield test_client


def _readable(response) -> str:
    """The error message; fails when the answer is not JSON with a plain ``detail`` or shows a traceback."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert "Traceback" not in response.text and 'File "' not in response.text and "/tmp" not in response.text
    return detail


def test_health_model_and_api_docs(client):
    assert client.get("/health").json() == {"status": "ok", "model": "late-fusion"}
    info = client.get("/model").json()
    assert info["labels"] == ["anger", "joy", "neutral"] and info["merkit_version"] == merkit.__version__
    assert info["modalities"] == {"text": {"extractor": "minilm", "dim": 384, "level": "utterance"}}
    assert info["limits"]["max_utterances"] == 8
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "ConversationInput" in schema["components"]["schemas"] and "UtteranceInput" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


SVG_NAMESPACES = ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink")  # names in markup, never fetched


def test_docs_pages_load_nothing_from_the_internet(client):
    for page in ("/docs", "/redoc", "/"):
        response = client.get(page)
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "http" not in policy, page
        html = response.text
        assert not [url for url in re.findall(r"https?://[^\s\"'<>)]+", html) if not url.startswith(SVG_NAMESPACES)], page
        assets = re.findall(r'(?:src|href)="([^"#]+)"', html)
        assert all(url.startswith("/") for url in assets), (page, assets)
        for url in assets:
            asset = client.get(url)
            assert asset.status_code == 200, url
            if url.endswith(".css"):  # a stylesheet's url(...)s are fetched too: data: only
                assert all(ref.strip("'\"").startswith("data:") for ref in re.findall(r"url\(([^)]*)\)", asset.text)), url


def test_the_schema_documents_every_accepted_body_and_refuses_what_is_refused(client):
    import jsonschema

    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    validator = jsonschema.Draft202012Validator({**schema["components"]["schemas"]["PredictRequest"], "components": schema["components"]})
    turn = {"speaker": "Ana", "text": "I got the job!"}
    for accepted in ({"utterances": [turn]}, {"dialogues": [{"utterances": [turn]}]}, [turn], [{"utterances": [turn]}]):
        assert validator.is_valid(accepted), accepted
        assert client.post("/predict", json=accepted).status_code == 200, accepted
    for refused in ({"utterances": []}, [], {"dialogues": []}):
        assert not validator.is_valid(refused), refused
        assert client.post("/predict", json=refused).status_code == 422, refused


def test_a_wrong_method_is_a_405_naming_the_allowed_ones(client):
    response = client.get("/predict")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert client.put("/health").headers["allow"] == "GET"


def test_predict_answers_what_the_python_api_says(client, predictor):
    conversation = {"dialogue_id": "office", "utterances": [{"speaker": "Ana", "text": "I got the job!"}, {"speaker": "Ben", "text": "No way."}]}
    response = client.post("/predict", json=conversation)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = predictor.predict(conversation).model_dump()
    assert body["labels"] == expected["labels"] and len(body["utterances"]) == 2
    for ours, theirs in zip(body["utterances"], expected["utterances"], strict=True):
        assert ours["label"] == theirs["label"] and ours["modalities"] == ["text"]
        assert ours["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-6)
        assert (ours["dialogue_id"], ours["speaker"]) == ("office", theirs["speaker"])


def _multipart(conversation: str, *files: tuple[str, bytes]) -> dict:
    return {"data": {"conversation": conversation}, "files": [("files", (name, content)) for name, content in files]}


BAD_REQUESTS = {
    "wrong type of text": ({"json": {"utterances": [{"text": 5}]}}, 422, "valid string"),
    "utterances not a list": ({"json": {"utterances": "hello"}}, 422, "valid list"),
    "a bare string": ({"json": "hello"}, 422, "not str"),
    "start not a number": ({"json": [{"text": "hi", "start": "soon"}]}, 422, "valid number"),
    "unknown field": ({"json": [{"text": "hi", "thermal": "x.bin"}]}, 422, "unknown field 'thermal'"),
    "unknown modality": ({"json": [{"text": "hi", "media": {"eeg": "x.edf"}}]}, 422, "unknown modality 'eeg'"),
    "empty conversation": ({"json": {"utterances": []}}, 422, "empty"),
    "empty list": ({"json": []}, 422, "empty"),
    "too many utterances": ({"json": [{"text": "hi"}] * 9}, 422, "too many utterances: 9, the limit is 8"),
    "end before start": ({"json": [{"text": "hi", "start": 2, "end": 1}]}, 422, "before start"),
    "malformed JSON": ({"content": b'{"utterances": [{"text": "hi"', "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    "not UTF-8": ({"content": b"\xff\xfe{", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    "too large": ({"json": [{"text": "x" * 300_000}]}, 413, "larger than the limit of 0.2 MB"),
    "plain text": ({"content": b"Ana: hi", "headers": {"content-type": "text/plain"}}, 415, "application/json"),
    "a file on the server": ({"json": [{"text": "hi", "audio": "/etc/passwd"}]}, 422, "not an uploaded file"),
    "form without conversation": ({"data": {"other": "1"}, "files": [("files", ("a.wav", b"RIFF"))]}, 422, "'conversation' field"),
    "form with bad JSON": (_multipart("[{", ("a.wav", b"RIFF")), 400, "'conversation' field is not valid JSON"),
    "upload not named by any utterance": (_multipart('[{"text": "hi"}]', ("a.wav", b"RIFF")), 422, "not named by any utterance"),
    "name not uploaded": (_multipart('[{"text": "hi", "audio": "b.wav"}]', ("a.wav", b"RIFF")), 422, "'b.wav' is not an uploaded file"),
    "two files of one name": (_multipart('[{"audio": "a.wav"}]', ("a.wav", b"1"), ("a.wav", b"2")), 422, "two uploaded files"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_that_says_what_was_wrong(client, case):
    request, status, message = BAD_REQUESTS[case]
    response = client.post("/predict", **request)
    assert response.status_code == status, response.text
    assert message in _readable(response)


def test_a_field_has_one_location_in_json_and_multipart(client):
    """The README sends ``{"utterances": [...]}`` as JSON and a flat list in a multipart form: the same wrong field reads the same."""
    turns = [{"text": "hi"}, {"text": "hello", "start": "soon"}]
    answers = [
        client.post("/predict", json={"utterances": turns}),
        client.post("/predict", json=turns),
        client.post("/predict", files={"conversation": (None, json.dumps(turns))}),
        client.post("/predict", files={"conversation": (None, json.dumps({"utterances": turns}))}),
    ]
    assert [a.status_code for a in answers] == [422] * 4
    assert {_readable(a).split(":")[0] for a in answers} == {"utterances.1.start"}


def test_the_server_survives_every_bad_request(client):
    for request, _, _ in BAD_REQUESTS.values():
        assert 400 <= client.post("/predict", **request).status_code < 500
    assert client.get("/health").status_code == 200
    assert client.post("/predict", json=[{"text": "still here"}]).status_code == 200
    assert client.get("/nowhere").status_code == 404 and _readable(client.get("/nowhere")) == "Not Found"


def test_a_body_without_content_length_is_cut_off_at_the_limit(client):
    def chunks():
        yield b'[{"text": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}]'

    response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than the limit" in _readable(response)


def test_an_internal_error_is_a_500_without_the_traceback(predictor, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals at /srv/merkit/model.py")

    monkeypatch.setattr(predictor, "predict", broken)
    with TestClient(create_app(predictor, LIMITS), raise_server_exceptions=False) as broken_client:
        response = broken_client.post("/predict", json=[{"text": "hi"}])
    assert response.status_code == 500
    assert _readable(response) == "internal error (logged on the server)" and "secret" not in response.text


# ------------------------------------------------------------------ uploads
@pytest.fixture(scope="module")
def audio_client(tmp_path_factory):
    pytest.importorskip("opensmile", reason="eGeMAPS features need the audio extra")
    pytest.importorskip("av", reason="media decoding needs PyAV (audio extra)")
    checkpoint = untrained_checkpoint(tmp_path_factory.mktemp("audio") / "ckpt", {"text": "minilm", "audio": "egemaps"})
    with merkit.load(checkpoint) as loaded, TestClient(create_app(loaded, LIMITS)) as test_client:
        yield test_client


def _uploads_left() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("merkit-upload-*")}


def test_media_uploads_are_used_checked_and_deleted(audio_client, tmp_path):
    before = _uploads_left()
    clip = tone(tmp_path / "clip.wav", 1.0).read_bytes()
    conversation = json.dumps([{"speaker": "Ana", "text": "Listen to this.", "audio": "clip.wav"}, {"speaker": "Ben", "text": "Nice."}])
    response = audio_client.post("/predict", **_multipart(conversation, ("clip.wav", clip)))
    assert response.status_code == 200, response.text
    first, second = response.json()["utterances"]
    assert first["modalities"] == ["text", "audio"] and second["modalities"] == ["text"]
    assert first["expert_weights"]["audio"] > 0 and second["expert_weights"]["audio"] == 0

    long_clip = tone(tmp_path / "long.wav", 3.0).read_bytes()
    too_long = audio_client.post("/predict", **_multipart('[{"audio": "long.wav"}]', ("long.wav", long_clip)))
    assert too_long.status_code == 422 and "long.wav lasts 3.0 s, longer than the limit of 2 s" in _readable(too_long)

    corrupt = audio_client.post("/predict", **_multipart('[{"text": "hi", "audio": "bad.wav"}]', ("bad.wav", b"RIFF....WAVE")))
    assert corrupt.status_code == 200  # a file that gives nothing is masked, with the reason
    assert corrupt.json()["utterances"][0]["modalities"] == ["text"] and corrupt.json()["utterances"][0]["notes"]["audio"]
    assert _uploads_left() == before


# ------------------------------------------------------------------ the web page
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def server(predictor):
    """A real uvicorn server on a free localhost port, in a thread; stopped at the end."""
    with serving(create_app(predictor, LIMITS)) as url:
        yield url


def test_the_web_page_shows_the_predicted_labels(server, predictor, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("Chromium is not installed (make test installs it with apt when run as root)")
    expected = predictor.predict(parse_lines(CONVERSATION))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server)
            page.wait_for_function("document.getElementById('model-info').textContent.includes('late-fusion')")
            page.fill("#conversation", CONVERSATION)
            page.click("#submit")
            page.wait_for_selector("#status[data-done=true]")
            labels = page.locator("[data-testid=label]").all_text_contents()
            speakers = page.locator(".utterance .speaker").all_text_contents()
            fills = page.locator(".utterance").first.locator(".fill")
            bars = fills.count()
            widths = [fills.nth(i).bounding_box()["width"] for i in range(bars)]
            track = page.locator(".utterance").first.locator(".track").first.bounding_box()["width"]
            uncertainty = page.locator("[data-testid=uncertainty]").first.text_content()
            assert not page.locator("#error").is_visible()

            page.fill("#conversation", "\n".join(f"P{i}: hello" for i in range(9)))
            page.click("#submit")
            page.wait_for_selector("#error", state="visible")
            too_many = page.locator("#error").text_content()
            assert page.locator(".utterance").count() == 0  # the earlier answer is not left under the error
            page.fill("#conversation", "[{")
            page.click("#submit")
            page.wait_for_function("document.getElementById('error').textContent.includes('does not parse')")

            clips = [tone(tmp_path / f"{n}.wav", 0.3) for n in (2, 10)]  # name order is numeric: 2 before 10
            page.set_input_files("#media", [str(c) for c in reversed(clips)])
            page.fill("#conversation", "Ana: one\nBen: two\nAna: three")
            page.click("#submit")
            page.wait_for_function("document.getElementById('error').textContent.includes('2 file(s) chosen for 3 line(s)')")
            page.fill("#conversation", "Ana: مرحبا، حصلت على الوظيفة!\nBen: two")
            page.click("#submit")
            page.wait_for_selector("#status[data-done=true]")
            notes = page.locator(".utterance .note").all_text_contents()
            directions = page.locator(".utterance .text").evaluate_all("nodes => nodes.map(n => getComputedStyle(n).direction)")
            assert page.locator("#conversation").get_attribute("dir") == "auto"
        finally:
            browser.close()
    assert labels == [u.label for u in expected.utterances]
    assert speakers == ["Ana", "Ben", "Ana"] and bars == 3
    top = max(expected.utterances[0].probabilities.values())
    assert widths[0] == pytest.approx(top * track, abs=2) and widths == sorted(widths, reverse=True)  # bars drawn to scale
    assert "not given by this model" in uncertainty
    assert too_many.startswith("422: too many utterances")
    # one chosen file per line: the text-only model says of each turn that its audio was not read
    assert notes == ["audio: the model does not read audio; the audio file was not used"] * 2
    assert directions == ["rtl", "ltr"]


def test_the_docs_and_the_page_ask_nothing_of_the_internet_in_a_browser(server):
    """Redoc's bundle asks cdn.redoc.ly for its logo by itself: the server's Content-Security-Policy stops it in the browser."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("Chromium is not installed (make test installs it with apt when run as root)")
    asked, blocked = {}, {}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            described = "text=Emotion recognition in conversations"  # from /openapi.json: the page's script ran
            for path, shown in (("docs", described), ("redoc", described), ("", "#model-info")):
                page = browser.new_page()
                page.on("request", lambda request, path=path: asked.setdefault(path, []).append(request.url))
                page.on("requestfailed", lambda request, path=path: blocked.setdefault(path, []).append((request.url, request.failure)))
                page.goto(server + path)
                page.wait_for_selector(shown)  # the page works with its policy
                page.wait_for_load_state("networkidle")
                page.close()
        finally:
            browser.close()
    assert set(asked) == {"docs", "redoc", ""}
    for path, urls in asked.items():
        outside = [url for url in urls if not url.startswith((server, "blob:" + server, "data:"))]
        assert all((url, "csp") in blocked.get(path, []) for url in outside), (path, outside, blocked.get(path))
    assert any("cdn.redoc.ly" in url for url in asked["redoc"])  # the test saw what the policy is for


def test_bad_numbers_and_lone_surrogates_are_422_not_500(client):
    bodies = [
        '{"utterances": [{"text": "ab\\ud800"}]}',
        '{"utterances": [{"speaker": "\\udfff", "text": "Hi."}]}',
        '{"utterances": [{"text": "Hi.", "start": Infinity}]}',
        '{"utterances": [{"text": "Hi.", "start": 1e308}]}',
    ]
    for body in bodies:
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, (body, response.status_code, response.text)
        _readable(response)
    multipart = client.post("/predict", files={"conversation": (None, '[{"text": "x\\ud800"}]')})
    assert multipart.status_code == 422, multipart.text


def test_deep_nesting_huge_numbers_and_long_file_names_are_answered(client):
    deep = client.post("/predict", content="[" * 100_000 + "]" * 100_000, headers={"content-type": "application/json"})
    assert deep.status_code == 400 and "nested too deeply" in _readable(deep)
    too_long = "utterances.0.start: the number has 5,000 digits, too many to be read"
    digits = '{"utterances": [{"text": "Hi.", "start": ' + "9" * 5000 + "}]}"
    huge = client.post("/predict", content=digits, headers={"content-type": "application/json"})
    assert huge.status_code == 422 and _readable(huge).startswith(too_long) and "sys." not in huge.text
    form = client.post("/predict", files={"conversation": (None, '[{"text": "Hi.", "start": -' + "9" * 5000 + "}]")})
    assert form.status_code == 422 and _readable(form).startswith(too_long)
    text = client.post("/predict", content='[{"text": "Hi."}, {"text": ' + "1" * 5000 + "}]", headers={"content-type": "application/json"})
    assert text.status_code == 422 and _readable(text).startswith("utterances.1.text: the number has 5,000 digits")
    name = "a" * 300 + ".wav"  # longer than a file name may be on disk: saved under a name of the server's own
    conversation = json.dumps([{"text": "Hi.", "audio": name}])
    response = client.post("/predict", files={"conversation": (None, conversation), "files": (name, b"RIFF", "audio/wav")})
    assert response.status_code == 200, response.text
    assert response.json()["utterances"][0]["modalities"] == ["text"]


def test_the_serve_command_refuses_a_busy_port_before_loading_and_serves_a_free_one(tmp_path):
    import subprocess
    import sys

    from conftest import poll_json, run_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        busy = run_cli("serve", str(tmp_path / "no-such-checkpoint"), "--port", str(port), timeout=60)
        assert busy.returncode == 2 and f"--port {port} on 127.0.0.1 is in use by another program" in busy.stderr
        assert "no such" not in busy.stderr.lower() and time.monotonic() - started < 30  # said before any loading
    checkpoint = untrained_checkpoint(tmp_path / "ckpt", {"text": "minilm"})
    command = [sys.executable, "-m", "merkit", "serve", str(checkpoint), "--port", str(port), "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        answer = poll_json(process, f"http://127.0.0.1:{port}/health", 120)
        assert answer == {"status": "ok", "model": "late-fusion"}, process.stderr.read() if process.poll() is not None else ""
    finally:
        process.terminate()
        process.wait(timeout=30)


class _SlowPredictor:
    """Stands in for a predictor: describes itself like the real one, counts its predictions and holds each until
    released; with ``overrun``, every prediction after the first computes until past its deadline."""

    def __init__(self, real, overrun=False):
        self.real, self.release, self.entered = real, threading.Event(), threading.Event()
        self.overrun, self.calls = overrun, 0

    def describe(self):
        return self.real.describe()

    def predict(self, conversations, deadline=None):
        self.calls += 1
        self.entered.set()
        assert self.release.wait(timeout=30)
        if self.overrun and self.calls > 1:
            time.sleep(max(0.0, deadline - time.monotonic()) + 0.01)
            check_deadline(deadline)
        return self.real.predict(conversations, deadline=deadline)


def _in_thread(client, answers, name):
    thread = threading.Thread(target=lambda: answers.setdefault(name, client.post("/predict", json={"utterances": [{"text": "hi"}]})))
    thread.start()
    return thread


def test_a_request_whose_time_went_in_the_queue_is_a_503_and_not_computed(predictor):
    """One predictor, held by a first request; the second's limit runs out while it waits: the server's fault."""
    slow = _SlowPredictor(predictor)
    with TestClient(create_app(slow, ServeLimits(max_queue=2, request_seconds=1.0))) as client:
        answers = {}
        first = _in_thread(client, answers, "first")
        assert slow.entered.wait(timeout=30)
        second = _in_thread(client, answers, "second")
        time.sleep(0.6)  # the second waits; freed now, the predictor comes to it with less left than a prediction takes
        slow.release.set()
        first.join(timeout=30)
        second.join(timeout=30)
    assert slow.calls == 1  # nothing was computed for the second
    assert answers["second"].status_code == 503 and "(request_seconds)" in _readable(answers["second"])
    assert int(answers["second"].headers["retry-after"]) >= 1


def test_a_request_that_runs_out_of_time_only_because_it_waited_is_a_503(predictor):
    """It starts with time left, computes past its deadline but less than the whole limit: retry, not 'send less'."""
    predictor.predict({"utterances": [{"text": "warm"}]})  # the model loaded: below, the time is the test's
    slow = _SlowPredictor(predictor, overrun=True)
    with TestClient(create_app(slow, ServeLimits(max_queue=2, request_seconds=2.0))) as client:
        answers = {}
        first = _in_thread(client, answers, "first")
        assert slow.entered.wait(timeout=30)
        second = _in_thread(client, answers, "second")
        time.sleep(0.2)
        slow.release.set()
        first.join(timeout=30)
        second.join(timeout=30)
    assert answers["first"].status_code == 200 and slow.calls == 2
    detail = _readable(answers["second"])
    assert answers["second"].status_code == 503 and "for its turn and then ran out of the time limit of 2 s" in detail
    assert "send fewer" not in detail and int(answers["second"].headers["retry-after"]) >= 1


def test_text_budget_queue_bound_and_time_limit(predictor):
    text = {"utterances": [{"speaker": "Ana", "text": "x" * 400}]}
    with TestClient(create_app(predictor, ServeLimits(max_characters=300))) as small:
        response = small.post("/predict", json=text)
        assert response.status_code == 422 and "too much text: 403 characters, the limit is 300 (max_characters)" in _readable(response)
        assert small.get("/model").json()["limits"]["max_characters"] == 300
    with TestClient(create_app(predictor, ServeLimits(request_seconds=1e-6))) as hurried:
        response = hurried.post("/predict", json={"utterances": [{"text": "hello"}]})
        assert response.status_code == 422 and "took longer than the limit of 1e-06 s (request_seconds)" in _readable(response)

    slow = _SlowPredictor(predictor)
    with TestClient(create_app(slow, ServeLimits(max_queue=2, request_seconds=1.0))) as client:
        answers = {}
        first = threading.Thread(target=lambda: answers.setdefault("first", client.post("/predict", json={"utterances": [{"text": "hi"}]})))
        first.start()
        assert slow.entered.wait(timeout=30)
        waited = client.post("/predict", json={"utterances": [{"text": "hi"}]})  # holds the second place for 1 s
        assert waited.status_code == 503 and "waited the whole time limit of 1 s (request_seconds)" in _readable(waited)
        assert int(waited.headers["retry-after"]) >= 1
        second = threading.Thread(target=lambda: answers.setdefault("second", client.post("/predict", json={"utterances": [{"text": "hi"}]})))
        second.start()
        time.sleep(0.3)  # the second request now waits for the predictor: both places are taken
        full = client.post("/predict", json={"utterances": [{"text": "hi"}]})
        assert full.status_code == 503 and "2 requests are running or waiting (max_queue)" in _readable(full)
        slow.release.set()
        first.join(timeout=30)
        second.join(timeout=30)
    # the first was held past its 1 s: the predictor's next deadline check refuses it
    assert answers["first"].status_code == 422 and "(request_seconds)" in _readable(answers["first"])
    assert answers["second"].status_code in (200, 422, 503)


def test_replicas_serve_requests_at_once(predictor):
    """Two copies of the model: two requests run together (each held inside its predictor until both are in)."""
    first, second = _SlowPredictor(predictor), _SlowPredictor(predictor)
    with TestClient(create_app([first, second], ServeLimits(max_queue=4))) as client:
        assert client.get("/model").json()["replicas"] == 2
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(client.post("/predict", json={"utterances": [{"text": "hi"}]})))
                   for _ in range(2)]  # fmt: skip
        for thread in threads:
            thread.start()
        assert first.entered.wait(timeout=30) and second.entered.wait(timeout=30)  # both running, neither finished
        first.release.set()  # one at a time from here: both copies wrap the same real predictor
        deadline = time.monotonic() + 30
        while not answers and time.monotonic() < deadline:
            time.sleep(0.01)
        second.release.set()
        for thread in threads:
            thread.join(timeout=30)
    assert [a.status_code for a in answers] == [200, 200]

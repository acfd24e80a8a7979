"""The HTTP API against the real model, in process (Starlette's TestClient runs the lifespan)."""

from __future__ import annotations

import dataclasses
import io
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
from starlette.testclient import TestClient

from app.server import create_app
from app.service import Phase, Service
from app.settings import Settings
from app.tts.engine import Engine
from app.tts.normalize import NormalizedText
from app.tts.synthesizer import SpeechResult, Synthesizer

pytestmark = pytest.mark.model

TEXT = "Hello there, this is a test."


def _service(client: TestClient) -> Service:
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    return service


def _wait_settled(client: TestClient) -> Phase:
    assert client.portal is not None
    return client.portal.call(_service(client).wait_settled)


@pytest.fixture(scope="module")
def client(settings: Settings, synthesizer: Synthesizer) -> Iterator[TestClient]:
    with TestClient(create_app(settings, synthesizer)) as test_client:
        assert _wait_settled(test_client) is Phase.READY
        yield test_client


def _speech(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/audio/speech", json={"input": TEXT, "voice": "jf_alpha", **body})


def test_wav_is_24k_mono_speech(client: TestClient) -> None:
    response = _speech(client)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    audio, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    info = sf.info(io.BytesIO(response.content))
    assert (rate, info.channels, info.subtype) == (24_000, 1, "PCM_16")
    assert audio.ndim == 1 and len(audio) / rate > 1.0
    assert float(response.headers["x-audio-seconds"]) == pytest.approx(len(audio) / rate, abs=1e-3)


def test_pcm_is_the_wav_samples_without_header(client: TestClient) -> None:
    wav = _speech(client, response_format="wav").content
    pcm = _speech(client, response_format="pcm").content
    samples, _ = sf.read(io.BytesIO(wav), dtype="int16")
    assert np.frombuffer(pcm, dtype="<i2").tolist() == samples.tolist()


@pytest.mark.parametrize(
    ("fmt", "media_type"), [("flac", "audio/flac"), ("mp3", "audio/mpeg"), ("opus", "audio/ogg")]
)
def test_compressed_formats_decode(client: TestClient, fmt: str, media_type: str) -> None:
    response = _speech(client, response_format=fmt)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    audio, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate in (24_000, 48_000)
    assert len(audio) / rate > 1.0


def test_openai_client_defaults_work(client: TestClient) -> None:
    response = client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": TEXT, "voice": "jm_kumo", "speed": 1.2}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"voice": "jf_alpha"}, 422, "invalid_request"),
        ({"input": "", "voice": "jf_alpha"}, 422, "invalid_request"),
        ({"input": TEXT, "voice": "alloy"}, 400, "unknown_voice"),
        ({"input": TEXT, "voice": "jf_alpha:-1"}, 400, "bad_voice"),
        ({"input": TEXT, "response_format": "aac"}, 422, "invalid_request"),
        ({"input": TEXT, "speed": 10}, 422, "invalid_request"),
        ({"input": TEXT, "speed": "fast"}, 422, "invalid_request"),
        ({"input": TEXT, "model": "whisper-1"}, 422, "invalid_request"),
        ({"input": "... !!!"}, 400, "empty_text"),
        ({"input": "word " * 1000}, 400, "text_too_long"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(
    client: TestClient, body: dict[str, Any], status: int, code: str
) -> None:
    response = client.post("/v1/audio/speech", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


def test_unknown_voice_message_lists_valid_voices(client: TestClient) -> None:
    message = _speech(client, voice="af_heart").json()["error"]["message"]
    assert "af_heart" in message and "jf_alpha" in message and "jm_kumo" in message


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"[1, 2]"])
def test_malformed_bodies_get_400(client: TestClient, raw: bytes) -> None:
    response = client.post(
        "/v1/audio/speech", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_json"


def test_server_keeps_serving_after_bad_requests(client: TestClient) -> None:
    for body in ({"input": TEXT, "voice": "nope"}, {"input": 5}, {}):
        assert client.post("/v1/audio/speech", json=body).status_code in (400, 422)
    assert _speech(client).status_code == 200


def test_voices_health_ready_models(client: TestClient) -> None:
    voices = client.get("/v1/voices").json()
    assert voices["default"] == "jm_kumo"
    assert {"name": "jm_kumo", "language": "ja", "gender": "male"} in voices["voices"]
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert "warm_up" in ready.json()["startup_seconds"]
    assert "tts-1" in [m["id"] for m in client.get("/v1/models").json()["data"]]


class GatedSynthesizer(Synthesizer):
    """Fault injection: warm-up and synthesis wait for the test to open a gate."""

    def __init__(self, real: Synthesizer) -> None:
        super().__init__(real.engine, real.voices, real.phonemizer, real.tokenizer)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def warm_up(self, voice: str, engine: Engine | None = None) -> SpeechResult:
        self.gate.wait(timeout=60)
        return super().warm_up(voice, engine)

    def render(
        self,
        text: str | NormalizedText,
        voice: str,
        speed: float,
        run_options: ort.RunOptions | None = None,
        engine: Engine | None = None,
        *,
        timestamps: bool = False,
    ) -> SpeechResult:
        self.entered.set()
        self.gate.wait(timeout=60)
        return super().render(text, voice, speed, run_options, engine, timestamps=timestamps)


def test_ready_is_503_until_warm(settings: Settings, synthesizer: Synthesizer) -> None:
    gated = GatedSynthesizer(synthesizer)
    with TestClient(create_app(settings, gated)) as client:
        health = client.get("/health")
        not_ready = client.get("/ready")
        speech = _speech(client)
        gated.gate.set()
        assert _wait_settled(client) is Phase.READY
        ready = client.get("/ready")
    assert health.status_code == 200
    assert not_ready.status_code == 503 and not_ready.json()["status"] == "warming"
    assert speech.status_code == 503 and speech.headers["retry-after"] == "1"
    assert speech.json()["error"]["code"] == "not_ready"
    assert ready.status_code == 200


def test_requests_beyond_the_queue_limit_get_503_busy(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    gated = GatedSynthesizer(synthesizer)
    one_slot = dataclasses.replace(settings, max_queued_requests=1)
    gated.gate.set()
    with TestClient(create_app(one_slot, gated)) as client:
        assert _wait_settled(client) is Phase.READY
        gated.gate.clear()
        gated.entered.clear()
        results: list[int] = []
        first = threading.Thread(target=lambda: results.append(_speech(client).status_code))
        first.start()
        assert gated.entered.wait(timeout=60)
        busy = _speech(client)
        gated.gate.set()
        first.join(timeout=60)
        after = _speech(client)
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "busy"
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["retry_after_ms"] == 1000
    assert results == [200]
    assert after.status_code == 200


def test_a_failed_load_is_reported_not_ready(settings: Settings, tmp_path: Any) -> None:
    broken = dataclasses.replace(settings, model_path=tmp_path / "missing.onnx")
    fatal: list[str] = []
    with TestClient(create_app(broken, on_fatal=fatal.append)) as client:
        assert _wait_settled(client) is Phase.FAILED
        ready = client.get("/ready")
        speech = _speech(client)
    assert ready.status_code == 503 and "does not exist" in ready.json()["error"]
    assert speech.status_code == 503
    assert len(fatal) == 1 and "missing.onnx" in fatal[0]

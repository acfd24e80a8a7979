"""What a client keeps to resume a stream, from the messages it sent and received."""

from __future__ import annotations

from typing import Any

from app import wire
from app.stream_record import StreamRecord


def audio(
    seq: int, seg: int, pos: int, samples: int, encoding: str = "pcm_s16le"
) -> dict[str, Any]:
    width = 4 if encoding == "f32le" else 2
    return {
        "type": "audio",
        "seq": seq,
        "seg": seg,
        "pos": pos,
        "encoding": encoding,
        "data": b"\0" * samples * width,
    }


def test_the_resume_point_is_the_last_complete_segment_plus_what_came_of_the_next() -> None:
    record = StreamRecord({"type": "start", "stream": "s", "voice": "jm_kumo"})
    for piece in ("Hello there. ", "How are ", "you today?"):
        record.sent({"type": "text", "stream": "s", "text": piece})
    assert record.resume() == wire.Resume(seg=0, seq=0, pos=0, chars=0, skip=0)
    record.received(audio(0, 0, 0, 960))
    record.received(audio(1, 0, 960, 480))
    record.received({"type": "segment", "seg": 0, "char_start": 0, "char_end": 12})
    record.received(audio(2, 1, 1440, 960, "f32le"))
    record.received({"type": "flow", "frame_ms": 80})
    assert record.resume() == wire.Resume(seg=1, seq=3, pos=1440, chars=12, skip=960)
    assert record.text_to_resend() == " How are you today?"
    assert not record.ended
    record.sent({"type": "end", "stream": "s"})
    assert record.ended
    record.sent({"type": "played", "stream": "s", "samples": 100})
    assert record.resume_start() == {
        "type": "start",
        "stream": "s",
        "voice": "jm_kumo",
        "resume": {"seg": 1, "seq": 3, "pos": 1440, "chars": 12, "skip": 960},
    }

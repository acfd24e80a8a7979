"""What a client remembers of a stream so that it can resume it on a new connection.

A dropped connection loses the stream on the server (and the server itself may be gone: the
client may reconnect to another replica). The client has everything needed to pick the stream up
where it stopped: the text it sent, and the position of the last complete segment it received
(``segment`` messages). ``StreamRecord.resume`` turns that into ``start``'s ``resume`` map
(``app.wire.Resume``): the server synthesizes the stream again from that segment on, cuts the
text the same way, and skips the samples of it the client already has. No word is lost or heard
twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app import wire

BYTES_PER_SAMPLE = {"pcm_s16le": 2, "f32le": 4}


@dataclass(slots=True)
class StreamRecord:
    """One stream as the client sent and received it."""

    start: dict[str, Any]
    """The ``start`` message as first sent (without ``resume``)."""
    pieces: list[str] = field(default_factory=list)
    ended: bool = False
    """``end`` was sent."""
    next_seq: int = 0
    next_pos: int = 0
    """``seq`` and ``pos`` of the next frame the client expects."""
    next_seg: int = 0
    """The first segment whose ``segment`` message has not arrived."""
    seg_pos: int = 0
    """Where ``next_seg`` starts (the end of the last complete segment)."""
    seg_chars: int = 0
    """Its text offset: the ``char_end`` of the last complete segment."""
    resumes: int = 0

    def sent(self, message: dict[str, Any]) -> None:
        """Note a message the client sends on this stream (its text and end are resent)."""
        kind = message.get("type")
        if kind == "text":
            self.pieces.append(str(message["text"]))
        elif kind == "end":
            self.ended = True

    def received(self, message: dict[str, Any]) -> None:
        """Advance with a message the server sent for this stream."""
        kind = message.get("type")
        if kind == "audio":
            width = BYTES_PER_SAMPLE.get(str(message.get("encoding")), 2)
            self.next_seq = int(message["seq"]) + 1
            self.next_pos = int(message["pos"]) + len(message["data"]) // width
        elif kind == "segment":
            self.next_seg = int(message["seg"]) + 1
            self.seg_pos = self.next_pos
            self.seg_chars = int(message["char_end"])

    def resume(self) -> wire.Resume:
        """Where the server should pick the stream up."""
        return wire.Resume(
            seg=self.next_seg,
            seq=self.next_seq,
            pos=self.seg_pos,
            chars=self.seg_chars,
            skip=self.next_pos - self.seg_pos,
        )

    def resume_start(self) -> dict[str, Any]:
        """The ``start`` message that resumes the stream."""
        return {**self.start, "resume": wire.resume_fields(self.resume())}

    def text_to_resend(self) -> str:
        """The stream's text from the resume point on."""
        return "".join(self.pieces)[self.seg_chars :]

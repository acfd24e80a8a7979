"""Text in, audio out: normalisation, phonemes, window splitting, voices and the engine together."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import onnxruntime as ort

from app.errors import EmptyTextError, TimestampsUnavailableError
from app.providers import CPU, ProviderPlan
from app.settings import Settings
from app.tts.chunking import MAX_TOKENS, MIN_CALL_TOKENS, Chunker, TextChunk
from app.tts.decoder_split import Window
from app.tts.engine import SAMPLE_RATE, Audio, Engine, EngineConfig, Synthesis, open_engines
from app.tts.first_window import LOOKAHEAD_FRAMES, first_window_frames
from app.tts.normalize import NormalizedText, normalize
from app.tts.phonemes import Phonemizer, Tokenizer, load_vocab, pause_token_ids
from app.tts.variants import resolve_model, tail_frames_of, variant_of
from app.tts.voices import VoiceBank
from app.tts.word_timing import WordTiming, chunk_words, merge_by_source

MIN_SPEED = 0.25
MAX_SPEED = 4.0
WARM_UP_TEXT = "Hello, this is a warm-up sentence."


@dataclass(frozen=True, slots=True)
class SpeechResult:
    """The audio for a whole text and what it cost."""

    audio: Audio
    chunks: tuple[TextChunk, ...]
    gen_seconds: float
    words: tuple[WordTiming, ...] = ()
    """Word timings on ``audio``'s samples, char spans into the text (when asked for)."""

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def rtf(self) -> float:
        """Real-time factor: compute seconds per audio second (below 1: faster than real time)."""
        return self.gen_seconds / self.audio_seconds if len(self.audio) else math.inf


def check_speed(speed: float) -> float:
    if not math.isfinite(speed) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
    return speed


class Synthesizer:
    """Owns the engines, the voices and the G2P; answers whole-text synthesis requests.

    ``engines`` are the provider plan's sessions (one inference actor each); ``engine`` is the
    first, which also serves whole-text requests and warm-up.
    """

    def __init__(
        self,
        engine: Engine,
        voices: VoiceBank,
        phonemizer: Phonemizer,
        tokenizer: Tokenizer,
        *,
        more_engines: Sequence[Engine] = (),
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        """``max_tokens``: the longest model call; a call's activations grow with its length."""
        self.engine = engine
        self.engines = [engine, *more_engines]
        self.voices = voices
        self.phonemizer = phonemizer
        self.tokenizer = tokenizer
        self.chunker = Chunker(phonemizer.phonemize, tokenizer.encode, max_tokens)
        self.load_seconds: dict[str, float] = {}
        """Set by ``load``: ``model`` (voices, model assembly and hash check, vocabulary) and
        ``sessions`` (graph edits and session creation), in seconds."""

    @classmethod
    def load(cls, settings: Settings, plan: ProviderPlan | None = None) -> Synthesizer:
        """Build everything from settings; blocking (file I/O, hashing, session creation).

        ``plan`` gives the provider, sessions and threads; without one, a single CPU session
        with ``settings.intra_op_threads`` threads.
        """
        cap = settings.max_segment_tokens
        if not MIN_CALL_TOKENS <= cap <= MAX_TOKENS:
            raise ValueError(
                f"max_segment_tokens must be in {MIN_CALL_TOKENS}..{MAX_TOKENS}, got {cap}"
            )
        started = time.perf_counter()
        voices = VoiceBank.load(settings.voices_path)
        voices.check(settings.default_voice)
        plan = plan or ProviderPlan(CPU, 1, settings.intra_op_threads or 1)
        model_path = resolve_model(
            settings.model_path, settings.cache_dir, settings.variant, plan.provider
        )
        vocab = load_vocab()
        model_seconds = time.perf_counter() - started
        config = EngineConfig(
            model_path,
            intra_op_threads=plan.threads if plan.provider == CPU else 1,
            providers=(plan.provider, CPU) if plan.provider != CPU else (CPU,),
            pause_tokens=pause_token_ids(vocab),
            arena_shrinkage=settings.arena_shrinkage,
            spin_wait=settings.spin_wait,
            windowed=settings.first_segment == "windowed",
            tail_frames=tail_frames_of(
                variant_of(settings.model_path, settings.variant, plan.provider)
            ),
        )
        started = time.perf_counter()
        engines = open_engines(config, plan.sessions)
        synthesizer = cls(
            engines[0],
            voices,
            Phonemizer("en-us"),
            Tokenizer(vocab),
            more_engines=engines[1:],
            max_tokens=settings.max_segment_tokens,
        )
        synthesizer.load_seconds = {
            "model": model_seconds,
            "sessions": time.perf_counter() - started,
        }
        return synthesizer

    def plan(self, text: str) -> list[TextChunk]:
        """Normalise and split ``text`` into model calls."""
        return self._plan(normalize(text))

    def _plan(self, normalized: NormalizedText) -> list[TextChunk]:
        chunks = self.chunker.split(normalized.text)
        if not chunks:
            raise EmptyTextError("the input has no speakable text")
        return chunks

    @property
    def has_timestamps(self) -> bool:
        """The model reports its durations, so word timings can be given."""
        return all(engine.has_durations for engine in self.engines)

    def check_timestamps(self) -> None:
        """Raise ``TimestampsUnavailableError`` unless word timings can be given."""
        if not self.has_timestamps:
            raise TimestampsUnavailableError(
                "this model does not report its durations, so it cannot time words"
            )

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
        """Plan and synthesize ``text`` (normalised here unless it already is) on the calling
        thread (no argument checks).

        With ``timestamps`` the result carries word timings (none where the model does not
        report durations)."""
        normalized = text if isinstance(text, NormalizedText) else normalize(text)
        chunks = self._plan(normalized)
        return self._render(
            normalized,
            chunks,
            voice,
            speed,
            run_options=run_options,
            engine=engine,
            timestamps=timestamps,
        )

    def _render(
        self,
        normalized: NormalizedText,
        chunks: list[TextChunk],
        voice: str,
        speed: float,
        *,
        run_options: ort.RunOptions | None,
        engine: Engine | None,
        timestamps: bool,
    ) -> SpeechResult:
        started = time.perf_counter()
        engine = engine or self.engine
        pieces = [
            engine.synthesize(
                chunk.tokens, self.voices.style(voice, len(chunk.tokens)), speed, run_options
            )
            for chunk in chunks
        ]
        elapsed = time.perf_counter() - started
        audio = np.concatenate([piece.audio for piece in pieces]).astype(np.float32, copy=False)
        words = self._word_timings(normalized, chunks, pieces) if timestamps else ()
        return SpeechResult(audio, tuple(chunks), elapsed, words)

    def _word_timings(
        self, normalized: NormalizedText, chunks: Sequence[TextChunk], pieces: Sequence[Synthesis]
    ) -> tuple[WordTiming, ...]:
        timed: list[tuple[int, int, int, int]] = []
        offset = 0
        for chunk, piece in zip(chunks, pieces, strict=True):
            if piece.durations is None:
                return ()
            for start, end, char_start, char_end in chunk_words(
                chunk, piece.durations, self.tokenizer.vocab, self.phonemizer.phonemize
            ):
                timed.append((start + offset, end + offset, char_start, char_end))
            offset += len(piece.audio)
        return tuple(merge_by_source(timed, normalized))

    def render_first_window(
        self,
        text: str,
        voice: str,
        speed: float,
        run_options: ort.RunOptions | None = None,
        engine: Engine | None = None,
        *,
        timestamps: bool = False,
    ) -> tuple[SpeechResult, Callable[[], SpeechResult] | None]:
        """``render``, with a windowed engine's first window (``app.tts.first_window``).

        Returns the first window's result and a function (to run on the engine's thread) that
        decodes the whole segment and returns its result: the first window's audio, then the
        whole decode's from the window's end on. Where a first window would not help (text
        longer than one call, an engine that is not windowed, a short segment, the engine's
        speed not known yet) the result is already whole and the function is None. Word
        timings, when asked for, come with the first result."""
        engine = engine or self.engine
        normalized = normalize(text)
        chunks = self._plan(normalized)
        if not engine.windowed or len(chunks) != 1:
            whole = self._render(
                normalized,
                chunks,
                voice,
                speed,
                run_options=run_options,
                engine=engine,
                timestamps=timestamps,
            )
            return whole, None
        (chunk,) = chunks
        started = time.perf_counter()
        style = self.voices.style(voice, len(chunk.tokens))
        side = engine.text_side(chunk.tokens, style, speed, run_options)
        frames = side.frames
        first = first_window_frames(frames, engine.seconds_per_frame)
        timed = Synthesis(np.zeros(0, dtype=np.float32), 0.0, side.durations)
        words = self._word_timings(normalized, chunks, [timed]) if timestamps else ()
        if first is None:
            audio = engine.decode(side, Window.whole(frames), run_options)
            engine.record_speed(frames, time.perf_counter() - started)
            return SpeechResult(audio, (chunk,), time.perf_counter() - started, words), None
        window = Window(0, first, 0, min(frames, first + LOOKAHEAD_FRAMES))
        head_audio = engine.decode(side, window, run_options)
        head = SpeechResult(head_audio, (chunk,), time.perf_counter() - started, words)

        def rest() -> SpeechResult:
            resumed = time.perf_counter()
            audio = engine.decode(side, Window.whole(frames), run_options)
            seconds = time.perf_counter() - resumed
            engine.record_speed(frames, seconds)
            joined = np.concatenate([head_audio, audio[len(head_audio) :]])
            return SpeechResult(joined, (chunk,), head.gen_seconds + seconds, words)

        return head, rest

    def speak_blocking(
        self, text: str, voice: str, speed: float = 1.0, *, timestamps: bool = False
    ) -> SpeechResult:
        """Synthesize a whole text on the calling thread."""
        self.check_request(voice, speed)
        return self.render(text, voice, speed, timestamps=timestamps)

    def check_request(self, voice: str, speed: float, *, timestamps: bool = False) -> None:
        """Raise the error a request with these arguments would get (unknown voice, speed out
        of range, timestamps without durations)."""
        check_speed(speed)
        self.voices.check(voice)
        if timestamps:
            self.check_timestamps()

    async def speak(
        self,
        text: str | NormalizedText,
        voice: str,
        speed: float = 1.0,
        *,
        timestamps: bool = False,
    ) -> SpeechResult:
        """Synthesize on the engine's thread; voice, speed and timestamp errors are raised
        before queueing. Cancelling the call stops the work: a call still queued never runs,
        and a running one is terminated in its current model call (``RunOptions.terminate``;
        later calls of the text then end at once)."""
        self.check_request(voice, speed, timestamps=timestamps)
        options = ort.RunOptions()
        render = partial(self.render, text, voice, speed, options, timestamps=timestamps)
        try:
            return await self.engine.call(render)
        except asyncio.CancelledError:
            options.terminate = True
            raise

    def warm_up(self, voice: str, engine: Engine | None = None) -> SpeechResult:
        """One synthesis so the first real request does not pay ONNX Runtime's first-run costs
        (also the health probe of an engine that failed)."""
        return self.render(WARM_UP_TEXT, voice, 1.0, engine=engine)

    def replace_engines(self, engines: Sequence[Engine]) -> list[Engine]:
        """Serve whole-text requests from ``engines`` from now on; returns the previous ones
        (still open: calls already queued on them finish there)."""
        if not engines:
            raise ValueError("at least one engine is needed")
        previous = self.engines
        self.engine, self.engines = engines[0], list(engines)
        return previous

    def close(self) -> None:
        for engine in self.engines:
            engine.close()

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.errors import BadVoiceSpecError, UnknownVoiceError, VoiceFileError
from app.tts.voices import (
    MAX_BLEND_PARTS,
    MAX_VOICE_CHARS,
    BlendPart,
    VoiceBank,
    VoiceInfo,
    parse_voice_spec,
)

EMBEDDED = ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]


@pytest.fixture(scope="module")
def bank() -> VoiceBank:
    return VoiceBank.load()


def test_embedded_voices_are_listed_with_language_and_gender(bank: VoiceBank) -> None:
    assert bank.names == EMBEDDED
    assert VoiceInfo("jm_kumo", "ja", "male") in bank.infos()
    assert VoiceInfo("jf_alpha", "ja", "female") in bank.infos()


@pytest.mark.parametrize(
    ("name", "language", "gender"),
    [
        ("af_heart", "en-us", "female"),
        ("bm_george", "en-gb", "male"),
        ("custom", "unknown", "unknown"),
    ],
)
def test_voice_info_from_prefix(name: str, language: str, gender: str) -> None:
    assert VoiceInfo.from_name(name) == VoiceInfo(name, language, gender)


@pytest.mark.parametrize(
    ("spec", "parts"),
    [
        ("jf_alpha", (BlendPart("jf_alpha", 1.0),)),
        ("jf_alpha:0.7+jm_kumo:0.3", (BlendPart("jf_alpha", 0.7), BlendPart("jm_kumo", 0.3))),
        ("jf_alpha+jm_kumo", (BlendPart("jf_alpha", 0.5), BlendPart("jm_kumo", 0.5))),
        (" jf_alpha : 2 + jm_kumo : 2 ", (BlendPart("jf_alpha", 0.5), BlendPart("jm_kumo", 0.5))),
        ("jf_alpha:1e308+jm_kumo:1e308", (BlendPart("jf_alpha", 0.5), BlendPart("jm_kumo", 0.5))),
        (
            "jf_alpha:3e-320+jm_kumo:1e-320",
            (BlendPart("jf_alpha", 0.75), BlendPart("jm_kumo", 0.25)),
        ),
    ],
)
def test_parse_voice_spec_normalises_weights(spec: str, parts: tuple[BlendPart, ...]) -> None:
    parsed = parse_voice_spec(spec)
    assert [p.name for p in parsed] == [p.name for p in parts]
    assert [p.weight for p in parsed] == pytest.approx([p.weight for p in parts])


@pytest.mark.parametrize(
    "spec",
    ["", "+", "jf_alpha+", "jf_alpha:-1", "jf_alpha:0", "jf_alpha:abc", "jf_alpha:nan", ":0.5"],
)
def test_bad_voice_specs_are_rejected(spec: str) -> None:
    with pytest.raises(BadVoiceSpecError):
        parse_voice_spec(spec)


def test_voice_strings_are_bounded_before_they_are_parsed() -> None:
    parts = "+".join(["jf_alpha"] * (MAX_BLEND_PARTS + 1))
    with pytest.raises(BadVoiceSpecError, match=f"at most {MAX_BLEND_PARTS} voices"):
        parse_voice_spec(parts)
    assert len(parse_voice_spec("+".join(["jf_alpha"] * MAX_BLEND_PARTS))) == MAX_BLEND_PARTS
    with pytest.raises(BadVoiceSpecError, match=f"at most {MAX_VOICE_CHARS} characters"):
        parse_voice_spec("x" * (MAX_VOICE_CHARS + 1))
    with pytest.raises(BadVoiceSpecError, match="at most") as raised:
        parse_voice_spec("jf_alpha:" + "1" * 1_000_000)
    assert len(raised.value.message) < 200


def test_errors_quote_only_a_prefix_of_the_voice(bank: VoiceBank) -> None:
    name = "z" * MAX_VOICE_CHARS
    for spec in (name, f"jf_alpha:{name}", f"{name}:-1"):
        with pytest.raises((BadVoiceSpecError, UnknownVoiceError)) as raised:
            bank.check(spec)
        assert len(raised.value.message) < 200, spec


def test_unknown_voice_lists_the_valid_ones(bank: VoiceBank) -> None:
    with pytest.raises(UnknownVoiceError) as raised:
        bank.check("af_nobody:0.5+jf_alpha:0.5")
    assert "af_nobody" in raised.value.message
    for name in EMBEDDED:
        assert name in raised.value.message


def test_style_row_follows_token_count(bank: VoiceBank) -> None:
    pack = bank.pack("jf_alpha")
    np.testing.assert_array_equal(bank.style("jf_alpha", 10), pack[9])
    np.testing.assert_array_equal(bank.style("jf_alpha", 5000), pack[-1])
    np.testing.assert_array_equal(bank.style("jf_alpha", 0), pack[0])


def test_blend_is_the_weighted_sum_and_differs_from_parents(bank: VoiceBank) -> None:
    blend = bank.style("jf_alpha:0.7+jm_kumo:0.3", 20)
    alpha, kumo = bank.style("jf_alpha", 20), bank.style("jm_kumo", 20)
    np.testing.assert_allclose(blend, 0.7 * alpha + 0.3 * kumo, rtol=1e-6, atol=1e-7)
    assert not np.allclose(blend, alpha)
    assert not np.allclose(blend, kumo)
    np.testing.assert_array_equal(blend, bank.style("jf_alpha:0.7+jm_kumo:0.3", 20))


def test_user_voices_file(tmp_path: Path, bank: VoiceBank) -> None:
    path = tmp_path / "voices-v1.0.bin"
    with path.open("wb") as handle:
        np.savez(handle, af_custom=bank.pack("jf_alpha"), bm_other=bank.pack("jm_kumo"))
    user = VoiceBank.load(path)
    assert user.names == ["af_custom", "bm_other"]
    assert user.infos()[0] == VoiceInfo("af_custom", "en-us", "female")
    np.testing.assert_array_equal(user.style("af_custom", 7), bank.style("jf_alpha", 7))


def test_voices_file_errors_are_one_clear_message(tmp_path: Path) -> None:
    with pytest.raises(VoiceFileError, match="does not exist"):
        VoiceBank.load(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not an npz at all")
    with pytest.raises(VoiceFileError, match="not a readable npz"):
        VoiceBank.load(garbage)
    wrong_shape = tmp_path / "wrong.npz"
    np.savez(wrong_shape, af_bad=np.zeros((510, 256), dtype=np.float32))
    with pytest.raises(VoiceFileError, match=r"expected \(N, 1, 256\)"):
        VoiceBank.load(wrong_shape)
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    with pytest.raises(VoiceFileError, match="no voices"):
        VoiceBank.load(empty)

"""aqsep.api: the Separator's inputs (arrays, queries, latents, settings) and its output paths."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_audio, write_file

import aqsep.api
from aqsep.api import (
    MAX_SEGMENT_SECONDS,
    Query,
    Separator,
    file_plan,
    pick_device,
    track_outputs,
)
from aqsep.errors import AqsepError, ModelError, OutputError, QueryError, SettingError


@pytest.fixture(scope="module")
def sep(tiny_model_dir) -> Separator:
    return Separator(tiny_model_dir, device="cpu")


def no_flags(err: pytest.ExceptionInfo) -> str:
    """The message of a library error, which must not name command-line options."""
    message = str(err.value)
    assert "--" not in message, message
    return message


# ---- track names -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("file", "track"),
    [
        ("Mr. Blue - Song A.stem.mp4", "Mr. Blue - Song A"),
        ("Mr. Blue - Song B.STEM.MP4", "Mr. Blue - Song B"),
        ("Mr. Blue - Song A.wav", "Mr. Blue - Song A"),
        ("v1.2 final.mix.flac", "v1.2 final.mix"),
        ("Dr. Who", "Dr. Who"),  # no audio suffix: nothing is cut
        ("take.3.M4A", "take.3"),
        (".wav", ".wav"),
    ],
)
def test_track_name_cuts_only_a_known_audio_suffix(tmp_path, file, track):
    name, outputs = track_outputs(tmp_path / file, tmp_path / "out", name="drums")
    assert name == track
    assert outputs == {"drums": tmp_path / "out" / track / "drums.wav"}


# ---- arrays ------------------------------------------------------------------------------------
def test_int16_array_is_read_as_pcm(sep):
    x = make_audio(0.5, 22050, 2)
    pcm = np.round(x * 32767).astype(np.int16)
    z = sep.class_latent("drums")
    from_int = sep.separate(pcm, 22050, z, residual=True)
    from_float = sep.separate(pcm / np.float32(32768), 22050, z, residual=True)
    assert from_int["target"].dtype == np.float32
    np.testing.assert_allclose(from_int["target"], from_float["target"], atol=1e-5)
    np.testing.assert_allclose(from_int["rest"], from_float["rest"], atol=1e-5)
    assert np.abs(from_int["target"]).max() < 2.0  # not 16000 (unscaled int16)


# ---- queries -----------------------------------------------------------------------------------
def test_one_query_may_be_given_alone(sep, tmp_path):
    clip = write_file(tmp_path / "clip.wav", make_audio(0.4, 22050, 1, seed=3), 22050)
    reference = sep.query_latent([clip])
    for alone in (str(clip), clip):
        torch.testing.assert_close(sep.query_latent(alone), reference)
    audio, sr = sf.read(str(clip), dtype="float32")
    torch.testing.assert_close(sep.query_latent((audio, sr)), reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "bad", [[], (), [(np.zeros(100), 8000, 1)], [3.5], np.zeros(100), None, b"clip.wav", 3]
)
def test_malformed_queries_are_query_errors(sep, bad):
    with pytest.raises(QueryError) as err:
        sep.query_latent(bad)
    no_flags(err)


@pytest.mark.parametrize("samples", [1, 30])
def test_a_query_shorter_than_one_stft_window_is_too_short_not_silent(sep, tmp_path, samples):
    clip = make_audio(samples / 22050, 22050, 1, level=0.9)
    with pytest.raises(QueryError, match="too short") as err:
        sep.query_latent([(clip, 22050)])
    assert f"{samples} samples" in no_flags(err) and "silent" not in str(err.value)
    song = write_file(tmp_path / "song.wav", make_audio(0.5, 22050, 1), 22050)
    with pytest.raises(QueryError, match="too short"):
        sep.range_latent(song, 0.1, 0.1 + samples / 22050)


@pytest.mark.parametrize(
    ("start", "end"), [(float("nan"), 2.0), (0.0, float("nan")), (float("inf"), None), ("0", 1)]
)
def test_a_range_that_is_not_numbers_is_a_setting_error(sep, tmp_path, start, end):
    song = write_file(tmp_path / "song.wav", make_audio(0.5, 22050, 1), 22050)
    with pytest.raises(SettingError, match="query range") as err:
        sep.range_latent(song, start, end)
    no_flags(err)


def test_blend_checks_both_latents(sep):
    z = sep.class_latent("bass")
    for bad in (torch.zeros(3), "drums", torch.full((8,), float("nan"))):
        with pytest.raises(QueryError) as err:
            sep.blend(z, bad, 0.5)
        no_flags(err)
        with pytest.raises(QueryError):
            sep.blend(bad, z, 0.5)
    np.testing.assert_allclose(sep.blend(z, sep.class_latent("drums"), 0.0), z, atol=1e-6)
    # a real blend moves away from both ends, and a torch tensor blends as its array does
    mid = sep.blend(z, sep.class_latent("drums"), 0.5)
    assert not np.allclose(mid, z) and not np.allclose(mid, sep.class_latent("drums"))
    np.testing.assert_array_equal(
        sep.blend(torch.from_numpy(z), sep.class_latent("drums"), 0.5), mid
    )


@pytest.mark.parametrize("model", [3, 2.5, b"tiny", ["tiny"]])
def test_a_model_of_the_wrong_type_is_a_model_error(model):
    with pytest.raises(ModelError, match="model must be a model folder") as err:
        Separator(model)
    no_flags(err)


def test_empty_class_name(sep):
    with pytest.raises(QueryError, match="class name") as err:
        sep.class_latent("")
    assert "drums" in no_flags(err)  # the known classes are listed


# ---- latents -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("latent", "message"),
    [
        ("drums", "array of 8 numbers, got str"),
        (torch.zeros(3), r"shape \(3,\) does not fit this model, which takes \(8,\)"),
        (torch.zeros(1, 2, 8), r"shape \(1, 2, 8\)"),
        (torch.full((8,), float("nan")), "NaN or infinite"),
        ([1.0] * 7, r"shape \(7,\)"),
        (["a"] * 8, "8 numbers"),
        (torch.zeros(8, dtype=torch.complex64), "real numbers"),
    ],
)
def test_bad_latents_are_query_errors_before_any_work(sep, latent, message, tmp_path):
    audio = make_audio(0.3, 22050, 1)
    with pytest.raises(QueryError, match=message) as err:
        sep.separate(audio, 22050, latent)
    no_flags(err)
    song = write_file(tmp_path / "song.wav", audio, 22050)
    with pytest.raises(QueryError, match=message):
        sep.separate_file(song, tmp_path / "out", latent)
    with pytest.raises(QueryError, match=message):
        sep.refine(song, latent)
    assert not (tmp_path / "out").exists()


def test_latents_as_arrays_lists_or_one_row_work_like_the_tensor(sep):
    audio = make_audio(0.3, 22050, 1)
    z = sep.class_latent("bass")
    expected = sep.separate(audio, 22050, z)["target"]
    assert isinstance(z, np.ndarray) and z.dtype == np.float32
    for same in (torch.from_numpy(z), z.tolist(), z[None], z.astype(np.float64)):
        np.testing.assert_allclose(sep.separate(audio, 22050, same)["target"], expected, atol=1e-6)


# ---- refinement --------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [-1, 1.5, "2", True])
def test_refine_refuses_steps_that_are_not_a_count(sep, tmp_path, steps):
    song = write_file(tmp_path / "song.wav", make_audio(0.3, 22050, 1), 22050)
    with pytest.raises(SettingError, match="refinement steps") as err:
        sep.refine(song, sep.class_latent("drums"), steps=steps)
    no_flags(err)


def test_refine_zero_steps_is_the_latent_itself(sep, tmp_path):
    song = write_file(tmp_path / "song.wav", make_audio(0.3, 22050, 1), 22050)
    z = sep.class_latent("drums")
    np.testing.assert_array_equal(sep.refine(song, z, steps=0), z)
    assert not np.array_equal(sep.refine(song, z, steps=1), z)


# ---- settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "tpu"}, "unknown device 'tpu'; choose one of auto, cpu, cuda, mps"),
        ({"device": "cpu:x"}, "unknown device"),
        ({"batch_size": 2.5}, "batch size must be a whole number, got 2.5"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"batch_size": True}, "batch size must be a whole number"),
        ({"overlap": 1.0}, "overlap must be from 0 to 0.9"),
        ({"overlap": 0.9999999}, r"overlap must be from 0 to 0.9 .*, got 0.9999999"),
        ({"batch_size": 100000}, "batch size must be at most 32 .*, got 100000"),
        ({"overlap": "0.5"}, "overlap must be a number"),
        ({"segment": 0.01}, "segment must be from 0.1 to"),
        ({"segment": 100000}, f"segment must be from 0.1 to {MAX_SEGMENT_SECONDS:g} s"),
        ({"segment": float("nan")}, "segment must be a finite number"),
    ],
)
def test_settings_out_of_range_are_setting_errors(tiny_model_dir, kwargs, message):
    with pytest.raises(SettingError, match=message) as err:
        Separator(tiny_model_dir, **kwargs)
    no_flags(err)
    assert isinstance(err.value, AqsepError) and isinstance(err.value, ValueError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_missing_gpu_is_a_setting_error_not_a_query_error():
    with pytest.raises(SettingError, match="no CUDA GPU") as err:
        pick_device("cuda")
    assert not isinstance(err.value, QueryError)
    no_flags(err)


def test_bits_as_an_int_and_format_checked_before_any_work(sep, tmp_path):
    song = write_file(tmp_path / "song.wav", make_audio(0.3, 22050, 2), 22050)
    result = sep.separate_file(song, tmp_path / "out", sep.class_latent("drums"), bits=24)
    assert sf.info(str(result.outputs["target"])).subtype == "PCM_24"
    for bad in ({"bits": 12}, {"ext": "mp3"}):  # refused even though the outputs exist
        with pytest.raises(OutputError) as err:
            sep.separate_file(song, tmp_path / "out", sep.class_latent("drums"), **bad)
        message = no_flags(err)
        assert "24" in message or "flac" in message


def test_a_chunk_is_never_longer_than_the_input(tiny_model_dir, monkeypatch):
    seen = []
    real = aqsep.api.separate_stream

    def spy(model, reader, latent, **kwargs):
        seen.append(kwargs["segment"])
        return real(model, reader, latent, **kwargs)

    monkeypatch.setattr(aqsep.api, "separate_stream", spy)
    sep = Separator(tiny_model_dir, device="cpu", segment=MAX_SEGMENT_SECONDS)
    audio = make_audio(0.5, 22050, 1)
    out = sep.separate(audio, 22050, sep.class_latent("drums"))["target"]
    assert seen == [pytest.approx(0.5)] and out.shape == audio.shape
    short = make_audio(0.05, 22050, 1)  # shorter than the model's excerpt: that is the floor
    sep.separate(short, 22050, sep.class_latent("drums"))
    assert seen[1] == pytest.approx(sep.model.config.audio.segment_seconds)
    # the cap changes nothing a user could hear: one chunk either way
    whole = Separator(tiny_model_dir, device="cpu", segment=0.5).separate(
        audio, 22050, sep.class_latent("drums")
    )["target"]
    np.testing.assert_allclose(out, whole, atol=1e-6)


# ---- several targets --------------------------------------------------------------------------
def test_separate_takes_named_latents_and_returns_them_in_order(sep):
    audio = make_audio(0.7, 44100, 2, seed=11)
    latents = {"vocals": sep.class_latent("vocals"), "drums": sep.class_latent("drums")}
    out = sep.separate(audio, 44100, latents, residual=True)
    assert list(out) == ["vocals", "drums", "rest"]
    assert all(v.shape == audio.shape and v.dtype == np.float32 for v in out.values())
    assert np.abs(sum(out.values()) - audio).max() < 1e-4
    # ratio masks with a rest only scale down: each estimate is at most its independent one
    free = sep.separate(audio, 44100, latents, masks="independent")
    single = sep.separate(audio, 44100, latents["drums"])["target"]
    np.testing.assert_allclose(free["drums"], single, atol=1e-5)
    mono = sep.separate(audio[0], 44100, latents)
    assert mono["vocals"].shape == audio[0].shape
    assert np.abs(mono["vocals"] + mono["drums"] - audio[0]).max() < 1e-4


def test_separate_file_writes_one_file_per_name(sep, tmp_path):
    song = write_file(tmp_path / "song.wav", make_audio(0.7, 22050, 2, seed=12), 22050)
    latents = {c: sep.class_latent(c) for c in sep.coarse_classes}
    result = sep.separate_file(song, tmp_path / "out", latents, bits="32f")
    assert list(result.outputs) == sep.coarse_classes
    stems = [sf.read(str(p), always_2d=True)[0] for p in result.outputs.values()]
    assert np.abs(sum(stems) - sf.read(str(song), always_2d=True)[0]).max() < 1e-4
    assert sep.separate_file(song, tmp_path / "out", latents).skipped


def test_bad_named_latents_are_clear_errors(sep, tmp_path):
    audio = make_audio(0.3, 22050, 1)
    z = sep.class_latent("bass")
    with pytest.raises(QueryError, match="no target given"):
        sep.separate(audio, 22050, {})
    with pytest.raises(OutputError, match="'rest' is taken"):
        sep.separate(audio, 22050, {"rest": z}, residual=True)
    with pytest.raises(OutputError, match="bad output name '../x'"):
        sep.separate(audio, 22050, {"../x": z})
    with pytest.raises(OutputError, match="control characters"):
        sep.separate(audio, 22050, {"a\0b": z})
    with pytest.raises(OutputError, match="too long: at most 180 bytes"):
        sep.separate(audio, 22050, {"x" * 300: z})
    with pytest.raises(OutputError, match="too long"):
        track_outputs("song.wav", tmp_path, name="é" * 100)  # 200 bytes
    with pytest.raises(OutputError, match="two outputs would be named"):
        sep.separate(audio, 22050, {"Bass": z, "bass": z})
    with pytest.raises(QueryError, match="does not fit this model"):
        sep.separate(audio, 22050, {"a": z, "b": torch.zeros(3)})
    with pytest.raises(SettingError, match="unknown mask rule 'soft'"):
        sep.separate(audio, 22050, {"a": z, "b": z}, masks="soft")
    with pytest.raises(SettingError, match="whole input back") as err:
        sep.separate(audio, 22050, z, masks="ratio")
    no_flags(err)
    # the rest makes ratio masks of one target meaningful: they are then its own mask
    one = sep.separate(audio, 22050, z, masks="ratio", residual=True)
    np.testing.assert_allclose(one["target"], sep.separate(audio, 22050, z)["target"], atol=1e-6)


# ---- one query plan ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "message"),
    [
        (Query(), "a query is one of .* this one gives none of them"),
        (Query(name="drums", start=0.1), "gives class and range"),
        (Query(clips=("a.wav",), latent=np.zeros(4)), "gives clips and latent"),
    ],
)
def test_a_query_gives_exactly_one_kind(sep, query, message):
    with pytest.raises(QueryError, match=message) as err:
        sep.latent_of(query)
    no_flags(err)


def test_each_kind_of_query_is_the_latent_of_its_own_method(sep, tmp_path):
    song = write_file(tmp_path / "song.wav", make_audio(1.0, 22050, 2, seed=21), 22050)
    clip = write_file(tmp_path / "clip.wav", make_audio(0.5, 22050, 1, seed=22), 22050)
    drums = sep.class_latent("drums")
    np.testing.assert_array_equal(sep.latent_of(Query(name="drums")), drums)
    np.testing.assert_array_equal(sep.latent_of(Query(clips=clip)), sep.query_latent(clip))
    np.testing.assert_array_equal(
        sep.latent_of(Query(start=0.2, end=0.7), song), sep.range_latent(song, 0.2, 0.7)
    )
    np.testing.assert_array_equal(sep.latent_of(Query(latent=drums.tolist())), drums)
    np.testing.assert_array_equal(sep.latent_of(drums), drums)  # a latent as it is
    slid = Query(name="drums", towards=Query(name="bass"), alpha=0.3)
    np.testing.assert_array_equal(
        sep.latent_of(slid), sep.blend(drums, sep.class_latent("bass"), 0.3)
    )
    refined = Query(name="drums", towards=Query(name="bass"), alpha=0.3, refine=2)
    np.testing.assert_array_equal(
        sep.latent_of(refined, song), sep.refine(song, sep.latent_of(slid), 2)
    )


def test_what_a_query_needs_is_said(sep, tmp_path):
    with pytest.raises(QueryError, match="a time range is read from the input"):
        sep.latent_of(Query(start=0.0, end=0.5))
    with pytest.raises(QueryError, match="refinement separates the input"):
        sep.latent_of(Query(name="drums", refine=1))
    with pytest.raises(QueryError, match="cannot slide or be refined itself"):
        sep.latent_of(Query(name="drums", towards=Query(name="bass", refine=1), alpha=0.5))
    with pytest.raises(QueryError, match="needs a query to slide towards"):
        sep.latent_of(Query(name="drums", alpha=0.5))
    with pytest.raises(QueryError, match=r"blend weight must be in \[0, 1\]"):
        sep.latent_of(Query(name="drums", towards=Query(name="bass"), alpha=1.5))
    with pytest.raises(SettingError, match="refinement steps"):
        sep.latent_of(Query(name="drums", refine=-1), (make_audio(0.3, 22050, 1), 22050))
    with pytest.raises(QueryError, match="unknown class"):
        sep.latent_of(Query(name="nope"))


def test_separation_takes_queries_made_on_its_own_input(sep, tmp_path):
    audio = make_audio(1.0, 22050, 2, seed=23)
    song = write_file(tmp_path / "song.wav", audio, 22050)
    z = sep.range_latent((audio, 22050), 0.1, 0.6)
    expected = sep.separate(audio, 22050, z)["target"]
    got = sep.separate(audio, 22050, Query(start=0.1, end=0.6))["target"]
    np.testing.assert_array_equal(got, expected)
    events = []
    result = sep.separate_file(
        song, tmp_path / "out", {"r": Query(start=0.1, end=0.6, refine=1)}, progress=events.append
    )
    # the refinement pass, then the separation: pass 1 and 2 of 2
    assert sorted({(e["pass"], e["passes"]) for e in events}) == [(1, 2), (2, 2)]
    refined = sep.refine(song, sep.range_latent(song, 0.1, 0.6), 1)
    as_read = sf.read(str(song), always_2d=True, dtype="float32")[0].T  # 16-bit, as separated
    np.testing.assert_allclose(
        sf.read(str(result.outputs["r"]), always_2d=True)[0].T,
        sep.separate(as_read, 22050, refined)["target"],
        atol=1 / 32768,
    )


def test_a_skipped_file_makes_no_latent(sep, tmp_path, monkeypatch):
    song = write_file(tmp_path / "song.wav", make_audio(0.5, 22050, 1), 22050)
    query = Query(start=0.0, end=0.3, refine=1)
    assert not sep.separate_file(song, tmp_path / "out", query).skipped
    monkeypatch.setattr(Separator, "range_latent", lambda *a: pytest.fail("a latent was made"))
    assert sep.separate_file(song, tmp_path / "out", query).skipped
    plan = file_plan(song, tmp_path / "out", ["target"])
    assert plan.skipped and plan.outputs["target"] == tmp_path / "out" / "song" / "target.wav"
    assert not file_plan(song, tmp_path / "out", ["target"], force=True).skipped


def test_no_output_replaces_a_query_clip(sep, tmp_path):
    song = write_file(tmp_path / "song.wav", make_audio(0.5, 22050, 1), 22050)
    out = tmp_path / "out"
    clip = write_file(out / "song" / "target.wav", make_audio(0.5, 22050, 1, seed=3), 22050)
    with pytest.raises(OutputError, match="is an input"):
        sep.separate_file(song, out, Query(clips=(clip,)), force=True)
    with pytest.raises(OutputError, match="is an input"):
        file_plan(song, out, ["target"], force=True, protect=[clip])

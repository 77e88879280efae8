"""`aqsep separate` end to end, on a tiny random-weight model and generated audio."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import make_audio, subprocess_env, write_file

from aqsep.cli import SUBCOMMANDS


@pytest.fixture
def song(tmp_path):
    """A stereo 48 kHz song of 1.5 s."""
    return write_file(tmp_path / "songs" / "song.wav", make_audio(1.5, 48000, 2), 48000)


@pytest.fixture
def clip(tmp_path):
    """A mono 22.05 kHz query clip of 0.8 s."""
    return write_file(tmp_path / "clip.wav", make_audio(0.8, 22050, 1, seed=5), 22050)


def assert_like(path, reference, subtype="PCM_16"):
    """``path`` has the length, rate and channel count of ``reference``."""
    out, ref = sf.info(str(path)), sf.info(str(reference))
    assert (out.frames, out.samplerate, out.channels) == (ref.frames, ref.samplerate, ref.channels)
    assert out.subtype == subtype


def test_query_file_writes_same_length_rate_and_channels_then_skips_then_forces(
    cli, tmp_path, song, clip, tiny_model_dir
):
    out = tmp_path / "out"
    args = ["separate", song, "--query", clip, "--model", tiny_model_dir, "-o", out]
    first = cli(*args)
    assert first.code == 0, first.err
    target = out / "song" / "target.wav"
    assert_like(target, song)
    assert "song: target.wav" in first.out
    stamp = target.stat().st_mtime_ns

    second = cli(*args)
    assert second.code == 0 and "skipped" in second.out
    assert target.stat().st_mtime_ns == stamp

    third = cli(*args, "--force")
    assert third.code == 0 and "skipped" not in third.out
    assert target.stat().st_mtime_ns != stamp
    assert_like(target, song)
    assert not list((out / "song").glob(".*.part"))


def test_target_with_residual_sums_to_the_input(cli, tmp_path, song, tiny_model_dir):
    out = tmp_path / "out"
    res = cli(
        "separate",
        song,
        "--target",
        "Drums",
        "--residual",
        "--bits",
        "32f",
        "--model",
        tiny_model_dir,
        "-o",
        out,
    )
    assert res.code == 0, res.err
    drums, sr = sf.read(str(out / "song" / "drums.wav"), always_2d=True)
    rest, _ = sf.read(str(out / "song" / "rest.wav"), always_2d=True)
    mix, _ = sf.read(str(song), always_2d=True)
    assert sr == 48000 and drums.shape == mix.shape
    assert np.abs(drums + rest - mix).max() < 1e-5
    assert sf.info(str(out / "song" / "drums.wav")).subtype == "FLOAT"


@pytest.mark.parametrize("query_range", ["0.2-1:00", "0.2:1.0", "-0:01", "0.5:"])
def test_query_range_of_the_input_itself(cli, tmp_path, song, tiny_model_dir, query_range):
    out = tmp_path / "out"
    res = cli(
        "separate", song, f"--query-range={query_range}", "--model", tiny_model_dir, "-o", out, "-q"
    )
    assert res.code == 0, res.err
    assert res.out == ""
    assert_like(out / "song" / "target.wav", song)


def test_query_range_past_the_end_is_a_clear_error(cli, song, tiny_model_dir):
    line = cli("separate", song, "--query-range", "5-6", "--model", tiny_model_dir).one_line_error()
    assert "starts at 5.00 s" in line and "lasts 1.50 s" in line


@pytest.mark.parametrize("other", ["bass", "clip"])
def test_blend_with_a_class_or_a_file(cli, tmp_path, song, clip, tiny_model_dir, other):
    other = str(clip) if other == "clip" else other

    def vocals(out, *blend):
        args = ("--bits", "32f", "--model", tiny_model_dir, "-o", out)
        res = cli("separate", song, "--target", "vocals", *blend, *args)
        assert res.code == 0, res.err
        assert_like(out / "song" / "vocals.wav", song, subtype="FLOAT")
        return sf.read(str(out / "song" / "vocals.wav"))[0]

    blended = vocals(tmp_path / "out", "--blend", f"{other}:0.3")
    # the blend is applied: not the output of the vocals latent alone
    assert np.abs(blended - vocals(tmp_path / "plain")).max() > 1e-4


def test_blend_changes_the_output_and_alpha_zero_does_not(cli, tmp_path, song, tiny_model_dir):
    def run(*extra):
        folder = tmp_path / f"out{len(extra)}{extra[-1] if extra else ''}"
        assert (
            cli(
                "separate",
                song,
                "--target",
                "vocals",
                "--bits",
                "32f",
                "--model",
                tiny_model_dir,
                "-o",
                folder,
                *extra,
            ).code
            == 0
        )
        return sf.read(str(folder / "song" / "vocals.wav"))[0]

    plain = run()
    np.testing.assert_allclose(run("--blend", "drums:0"), plain, atol=1e-6)
    assert np.abs(run("--blend", "drums:1") - plain).max() > 1e-4


def test_blend_with_an_unknown_class_or_missing_file(cli, song, tiny_model_dir):
    line = cli(
        "separate", song, "--target", "vocals", "--blend", "piano:0.5", "--model", tiny_model_dir
    ).one_line_error()
    assert "piano" in line and "bass, drums, other, vocals" in line
    line = cli(
        "separate",
        song,
        "--target",
        "vocals",
        "--blend",
        "nothere.wav:0.5",
        "--model",
        tiny_model_dir,
    ).one_line_error()
    assert "nothere.wav: no such file" in line


def test_refine(cli, tmp_path, song, clip, tiny_model_dir):
    out = tmp_path / "out"
    res = cli(
        "separate",
        song,
        "--query",
        clip,
        "--refine",
        "2",
        "--bits",
        "32f",
        "--model",
        tiny_model_dir,
        "-o",
        out,
    )
    assert res.code == 0, res.err
    assert_like(out / "song" / "target.wav", song, subtype="FLOAT")
    plain = tmp_path / "plain"
    assert (
        cli(
            "separate",
            song,
            "--query",
            clip,
            "--bits",
            "32f",
            "--model",
            tiny_model_dir,
            "-o",
            plain,
        ).code
        == 0
    )
    refined = sf.read(str(out / "song" / "target.wav"))[0]
    assert np.abs(refined - sf.read(str(plain / "song" / "target.wav"))[0]).max() > 1e-6


def test_flac_24_bit_and_name(cli, tmp_path, song, clip, tiny_model_dir):
    out = tmp_path / "out"
    res = cli(
        "separate",
        song,
        "--query",
        clip,
        "--format",
        "flac",
        "--bits",
        "24",
        "--name",
        "hihat",
        "--residual",
        "--model",
        tiny_model_dir,
        "-o",
        out,
    )
    assert res.code == 0, res.err
    assert_like(out / "song" / "hihat.flac", song, subtype="PCM_24")
    assert_like(out / "song" / "rest.flac", song, subtype="PCM_24")


def test_flac_float_is_refused_before_any_work(cli, song, tiny_model_dir):
    line = cli(
        "separate",
        song,
        "--target",
        "drums",
        "--format",
        "flac",
        "--bits",
        "32f",
        "--model",
        tiny_model_dir,
    ).one_line_error()
    assert "FLAC cannot store float" in line


def test_folders_and_globs(cli, tmp_path, tiny_model_dir, monkeypatch):
    album = tmp_path / "album"
    write_file(album / "b.flac", make_audio(0.5, 44100, 2, seed=1), 44100)
    write_file(album / "a.wav", make_audio(0.4, 22050, 1, seed=2), 22050)
    (album / "notes.txt").write_text("not audio, ignored inside a folder")
    (album / ".hidden.wav").write_bytes(b"")
    write_file(tmp_path / "live" / "c.wav", make_audio(0.3, 8000, 6, seed=3), 8000)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    res = cli(
        "separate",
        "album",
        "live/*.wav",
        "album/a.wav",
        "--target",
        "bass",
        "--model",
        tiny_model_dir,
        "-o",
        out,
    )
    assert res.code == 0, res.err
    assert [line.split(":")[0] for line in res.out.splitlines()] == [
        "a",
        "b",
        "c",
    ]  # each file once
    assert_like(out / "a" / "bass.wav", album / "a.wav")
    assert_like(out / "b" / "bass.wav", album / "b.flac")
    assert_like(out / "c" / "bass.wav", tmp_path / "live" / "c.wav")


def test_glob_without_matches_and_empty_folder(cli, tmp_path, tiny_model_dir):
    (tmp_path / "empty").mkdir()
    line = cli(
        "separate", str(tmp_path / "*.mp3"), "--target", "bass", "--model", tiny_model_dir
    ).one_line_error()
    assert "no file matches" in line
    line = cli(
        "separate", tmp_path / "empty", "--target", "bass", "--model", tiny_model_dir
    ).one_line_error()
    assert "holds no audio files" in line


def test_two_inputs_with_the_same_track_name_are_refused(cli, tmp_path, tiny_model_dir):
    a = write_file(tmp_path / "x" / "song.wav", make_audio(0.3, 8000, 1), 8000)
    b = write_file(tmp_path / "y" / "song.flac", make_audio(0.3, 8000, 1), 8000)
    line = cli("separate", a, b, "--target", "bass", "--model", tiny_model_dir).one_line_error()
    assert "would both be written to" in line


def test_one_bad_track_does_not_stop_the_others(cli, tmp_path, tiny_model_dir):
    good = write_file(tmp_path / "good.wav", make_audio(0.3, 8000, 1), 8000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    res = cli(
        "separate",
        bad,
        good,
        "--target",
        "bass",
        "--model",
        tiny_model_dir,
        "-o",
        tmp_path / "out",
        "-q",
    )
    assert res.code == 2
    assert res.err.strip().splitlines() == [f"aqsep: error: {bad}: empty file (0 bytes)"]
    assert (tmp_path / "out" / "good" / "bass.wav").is_file()


def test_usage_errors_are_one_line(cli, song, tiny_model_dir):
    assert (
        "nothing to separate: give --target(s)"
        in cli("separate", song, "--model", tiny_model_dir).one_line_error()
    )
    assert (
        "--each gives one output per --query clip"
        in cli(
            "separate", song, "--target", "a", "--each", "--model", tiny_model_dir
        ).one_line_error()
    )
    assert (
        "bad class name in 'vocals,,drums'"
        in cli("separate", song, "--targets", "vocals,,drums").one_line_error()
    )
    assert "--masks" in cli("separate", song, "--target", "a", "--masks", "soft").one_line_error()
    assert (
        "--overlap" in cli("separate", song, "--target", "a", "--overlap", "1.0").one_line_error()
    )
    assert (
        "--batch-size"
        in cli("separate", song, "--target", "a", "--batch-size", "0").one_line_error()
    )
    # a user's number costs bounded memory and time: the bound is in the message
    line = cli("separate", song, "--target", "a", "--batch-size", "100000").one_line_error()
    assert "--batch-size" in line and "at most 32" in line
    line = cli("separate", song, "--target", "a", "--overlap", "0.9999999").one_line_error()
    assert "--overlap" in line and "from 0 to 0.9" in line
    assert "--segment" in cli("separate", song, "--target", "a", "--segment", "0").one_line_error()
    assert "--blend" in cli("separate", song, "--target", "a", "--blend", "bass:2").one_line_error()
    assert "--name" in cli("separate", song, "--target", "a", "--name", "../x").one_line_error()
    line = cli("separate", song, "--target", "a", "--name", "x" * 300).one_line_error()
    assert "--name" in line and "too long" in line  # the library's check, worded by the CLI
    assert (
        "'rest'"
        in cli("separate", song, "--target", "a", "--name", "rest", "--residual").one_line_error()
    )


def test_evaluate_and_experiment_check_the_chunk_options_as_separate_does(cli, tmp_path):
    data = ["--data", tmp_path, "-o", tmp_path / "out"]
    for command in (["evaluate", *data], ["experiment", "compare", *data]):
        for option, value in (
            ("--overlap", "1.0"),
            ("--batch-size", "0"),
            ("--segment", "0"),
            ("--device", "gpu0"),
            ("--max-tracks", "0"),  # was taken as "every track"
        ):
            assert option in cli(*command, option, value).one_line_error()


def test_default_model_missing_says_so(cli, song, tmp_path, monkeypatch):
    import aqsep.release

    monkeypatch.setattr(aqsep.release, "BUNDLED_DIR", tmp_path / "no-models")
    line = cli("separate", song, "--target", "drums").one_line_error()
    assert "bundled default model is not installed" in line and "--model" in line


def test_quiet_prints_nothing(cli, tmp_path, song, tiny_model_dir):
    res = cli(
        "separate",
        song,
        "--target",
        "drums",
        "--model",
        tiny_model_dir,
        "-o",
        tmp_path / "o",
        "--quiet",
    )
    assert res.code == 0 and res.out == "" and res.err == ""


def test_progress_bar_counts_chunks_of_every_pass(cli, tmp_path, song, tiny_model_dir):
    res = cli(
        "separate",
        song,
        "--target",
        "drums",
        "--refine",
        "1",
        "--model",
        tiny_model_dir,
        "-o",
        tmp_path,
    )
    assert res.code == 0
    assert "chunk" in res.err  # tqdm writes to stderr; the bar is removed when the track is done


# ---- several outputs in one pass ----------------------------------------------------------------
def _read(path):
    return sf.read(str(path), always_2d=True)[0]


def test_targets_all_writes_every_class_summing_to_the_input(cli, tmp_path, song, tiny_model_dir):
    out = tmp_path / "out"
    res = cli(
        "separate", song, "--targets", "all", "--bits", "32f", "--model", tiny_model_dir, "-o", out
    )
    assert res.code == 0, res.err
    names = ["bass", "drums", "other", "vocals"]
    assert "song: bass.wav, drums.wav, other.wav, vocals.wav ->" in res.out
    stems = [_read(out / "song" / f"{n}.wav") for n in names]
    for name, stem in zip(names, stems, strict=True):
        assert_like(out / "song" / f"{name}.wav", song, subtype="FLOAT")
        assert np.abs(stem).max() > 1e-3
    assert np.abs(sum(stems) - _read(song)).max() < 1e-4  # ratio masks by default
    # one pass gives what separate runs give with independent masks, named the same way
    free = tmp_path / "free"
    assert (
        cli(
            "separate",
            song,
            "--targets",
            "drums,Vocals",
            "--masks",
            "independent",
            "--bits",
            "32f",
            "--model",
            tiny_model_dir,
            "-o",
            free,
        ).code
        == 0
    )
    alone = tmp_path / "alone"
    assert (
        cli(
            "separate",
            song,
            "--target",
            "vocals",
            "--bits",
            "32f",
            "--model",
            tiny_model_dir,
            "-o",
            alone,
        ).code
        == 0
    )
    np.testing.assert_allclose(
        _read(free / "song" / "vocals.wav"), _read(alone / "song" / "vocals.wav"), atol=1e-5
    )
    assert sorted(p.name for p in (free / "song").iterdir()) == ["drums.wav", "vocals.wav"]


def test_several_targets_with_residual_sum_to_the_input(cli, tmp_path, song, tiny_model_dir):
    out = tmp_path / "out"
    res = cli(
        "separate",
        song,
        "--target",
        "vocals",
        "--target",
        "drums,vocals",
        "--residual",
        "--bits",
        "32f",
        "--model",
        tiny_model_dir,
        "-o",
        out,
    )
    assert res.code == 0, res.err
    assert sorted(p.name for p in (out / "song").iterdir()) == [
        "drums.wav",
        "rest.wav",
        "vocals.wav",
    ]
    parts = [_read(out / "song" / f"{n}.wav") for n in ("vocals", "drums", "rest")]
    assert np.abs(sum(parts) - _read(song)).max() < 1e-4


def test_each_query_clip_gives_its_own_output_in_one_run(cli, tmp_path, song, tiny_model_dir):
    clips = [
        write_file(tmp_path / "clips" / f"{n}.wav", make_audio(0.6, 22050, 1, seed=s), 22050)
        for s, n in enumerate(("kick", "snare", "hat.take2"))
    ]
    out = tmp_path / "out"
    res = cli(
        "separate",
        song,
        "--query",
        *clips,
        "--each",
        "--bits",
        "32f",
        "--model",
        tiny_model_dir,
        "-o",
        out,
    )
    assert res.code == 0, res.err
    written = sorted(p.name for p in (out / "song").iterdir())
    assert written == ["hat.take2.wav", "kick.wav", "snare.wav"]
    # each is that clip's own separation (independent masks), not the average of the three
    alone = tmp_path / "alone"
    assert (
        cli(
            "separate",
            song,
            "--query",
            clips[1],
            "--bits",
            "32f",
            "--model",
            tiny_model_dir,
            "-o",
            alone,
        ).code
        == 0
    )
    np.testing.assert_allclose(
        _read(out / "song" / "snare.wav"), _read(alone / "song" / "target.wav"), atol=1e-5
    )
    assert np.abs(_read(out / "song" / "kick.wav") - _read(out / "song" / "snare.wav")).max() > 1e-6


def test_mixed_query_kinds_each_name_an_output(cli, tmp_path, song, clip, tiny_model_dir):
    out = tmp_path / "out"
    res = cli(
        "separate",
        song,
        "--target",
        "bass",
        "--query",
        clip,
        "--query-range",
        "0.2:1.2",
        "--model",
        tiny_model_dir,
        "-o",
        out,
    )
    assert res.code == 0, res.err
    written = sorted(p.name for p in (out / "song").iterdir())
    assert written == ["bass.wav", "range.wav", "target.wav"]
    named = tmp_path / "named"
    res = cli(
        "separate",
        song,
        "--target",
        "bass",
        "--query-range",
        "0.2:1.2",
        "--name",
        "guitar",
        "--model",
        tiny_model_dir,
        "-o",
        named,
    )
    assert res.code == 0, res.err
    assert sorted(p.name for p in (named / "song").iterdir()) == ["bass.wav", "guitar.wav"]


def test_messages_say_what_is_wrong(cli, tmp_path, song, tiny_model_dir):
    model = ["--model", tiny_model_dir, "-o", tmp_path / "out"]
    line = cli("separate", song, "--query-range=-1:3", *model).one_line_error()
    assert "cannot be negative" in line and "bad time" not in line
    folder = tmp_path / "in"
    folder.mkdir()
    line = cli("separate", song, "--target", "bass", "--blend", f"{folder}:0.5", *model)
    assert "is a folder" in line.one_line_error()
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    line = cli("separate", fifo, "--target", "bass", *model).one_line_error()
    assert "not a regular file" in line and "empty" not in line
    ten = write_file(tmp_path / "ten.wav", make_audio(0.3, 22050, 10), 22050)
    line = cli("separate", ten, "--target", "bass", "--format", "flac", *model).one_line_error()
    assert "at most 8 channels" in line and ".part" not in line
    assert not (tmp_path / "out").exists()


def test_output_names_that_clash_are_refused_before_any_work(cli, tmp_path, song, tiny_model_dir):
    a = write_file(tmp_path / "a" / "kick.wav", make_audio(0.6, 22050, 1, seed=1), 22050)
    b = write_file(tmp_path / "b" / "kick.wav", make_audio(0.6, 22050, 1, seed=2), 22050)
    out = tmp_path / "out"
    line = cli(
        "separate", song, "--query", a, b, "--each", "--model", tiny_model_dir, "-o", out
    ).one_line_error()
    assert "two outputs would be written to kick.<ext>" in line
    assert "rename one of the clips" in line and "--name" not in line  # --each refuses --name
    rest = write_file(tmp_path / "rest.wav", make_audio(0.6, 22050, 1, seed=3), 22050)
    line = cli(
        "separate",
        song,
        "--query",
        rest,
        "--each",
        "--target",
        "bass",
        "--residual",
        "--model",
        tiny_model_dir,
        "-o",
        out,
    ).one_line_error()
    assert "'rest' is taken by --residual" in line
    line = cli(
        "separate",
        song,
        "--targets",
        "bass,drums",
        "--name",
        "x",
        "--model",
        tiny_model_dir,
        "-o",
        out,
    ).one_line_error()
    assert "--name names the output of --query or --query-range" in line
    line = cli(
        "separate",
        song,
        "--target",
        "bass",
        "--masks",
        "ratio",
        "--model",
        tiny_model_dir,
        "-o",
        out,
    ).one_line_error()
    assert "--masks ratio: ratio masks of one target without the rest" in line
    assert (
        "unknown class 'nope'"
        in cli(
            "separate", song, "--targets", "bass,nope", "--model", tiny_model_dir, "-o", out
        ).one_line_error()
    )
    assert not out.exists()


# ---- help ---------------------------------------------------------------------------------------
def test_top_level_help(cli):
    res = cli("--help")
    assert res.code == 0 and "separate" in res.out


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_subcommand_help(cli, command):
    name = command.replace("_", "-")  # the command a module of aqsep.cli adds
    res = cli(name, "--help")
    assert res.code == 0 and res.out.startswith("usage: aqsep " + name)


def test_the_top_level_help_lines_are_the_subcommands_own(cli):
    """`aqsep --help` lists each command with the help its module gives (without importing it)."""
    from aqsep.cli import build_parser

    full = build_parser()
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    own = {choice.dest: choice.help for choice in sub._choices_actions}
    assert own == {name.replace("_", "-"): line for name, line in SUBCOMMANDS.items()}
    out = " ".join(cli("--help").out.split())
    assert all(" ".join(line.split()) in out for line in SUBCOMMANDS.values())


def test_a_missing_subcommand_module_fails_loudly(monkeypatch):
    from aqsep import cli as cli_package

    monkeypatch.setitem(cli_package.SUBCOMMANDS, "not_written", "a command without its module")
    with pytest.raises(ModuleNotFoundError, match="aqsep.cli.not_written"):
        cli_package.build_parser()
    with pytest.raises(ModuleNotFoundError, match="aqsep.cli.not_written"):
        cli_package.main(["not-written"])


SUBCOMMAND_HELP = [[name.replace("_", "-"), "--help"] for name in SUBCOMMANDS]


@pytest.mark.parametrize("argv", [["--version"], ["--help"], [], *SUBCOMMAND_HELP])
def test_help_and_version_import_no_torch(argv):
    """Start-up: `aqsep --help`, `aqsep --version`, a bare `aqsep` and every subcommand's
    `--help` never load PyTorch."""
    code = (
        "import sys\n"
        "from aqsep.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env()
    )
    assert res.stdout.strip().splitlines()[-1] == "False", res.stderr


def test_separate_help_has_examples(cli):
    out = cli("separate", "--help").out
    for text in (
        "examples:",
        "--query-range",
        "START-END",
        "--blend",
        "--refine",
        "--residual",
        "--force",
        "--targets all",
        "--each",
        "--masks",
    ):
        assert text in out


# ---- as an installed command would run: a real process --------------------------------------
@pytest.mark.slow
def test_subprocess_end_to_end(tmp_path, song, clip, tiny_model_dir):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "aqsep",
        "separate",
        str(song),
        "--query",
        str(clip),
        "--model",
        str(tiny_model_dir),
        "-o",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert_like(out / "song" / "target.wav", song)
    assert "song: target.wav" in done.stdout


@pytest.mark.slow
def test_subprocess_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, tiny_model_dir):
    missing = str(tmp_path / "missing.wav")
    cmd = [
        sys.executable,
        "-m",
        "aqsep",
        "separate",
        missing,
        "--target",
        "drums",
        "--model",
        str(tiny_model_dir),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"aqsep: error: {missing}: no such file"]
    debug = subprocess.run(
        cmd[:3] + ["--debug"] + cmd[3:],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and debug.stderr.strip().endswith(
        f"aqsep: error: {missing}: no such file"
    )
    assert os.path.exists(tiny_model_dir)


# ---- defects found with real inputs --------------------------------------------------------
def test_version(cli):
    from aqsep import __version__

    res = cli("--version")
    assert res.code == 0 and res.out.strip() == f"aqsep {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        ["separate", "song.wav", "--target", "drums"],
        ["train", "--data", "corpus", "--out", "run"],
        ["synth", "--out", "corpus"],
        ["evaluate", "--data", "corpus", "-o", "eval"],
        ["experiment", "tsne", "--data", "corpus", "-o", "exp"],
    ],
)
def test_debug_is_accepted_after_every_subcommand(argv):
    from aqsep.cli import build_parser

    parser = build_parser()
    assert parser.parse_args([*argv, "--debug"]).debug is True
    assert parser.parse_args(["--debug", *argv]).debug is True
    assert parser.parse_args(argv).debug is False


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_input_name_is_an_error_not_the_current_folder(
    cli, tmp_path, tiny_model_dir, monkeypatch, empty
):
    write_file(tmp_path / "here.wav", make_audio(0.3, 8000, 1), 8000)
    monkeypatch.chdir(tmp_path)
    line = cli(
        "separate", empty, "--target", "drums", "--model", tiny_model_dir, "-o", "out"
    ).one_line_error()
    assert "empty name" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("empty", ["", " "])
def test_an_empty_target_is_a_usage_error(cli, song, tiny_model_dir, tmp_path, empty):
    res = cli("separate", song, "--target", empty, "--model", tiny_model_dir, "-o", tmp_path / "o")
    assert "--target" in res.one_line_error() and res.code == 2
    assert not (tmp_path / "o").exists()


def test_stem_files_whose_names_hold_dots_get_folders_of_their_own(cli, tmp_path, tiny_model_dir):
    from test_audio import encode_with_av

    songs = tmp_path / "songs"
    songs.mkdir()
    for i, name in enumerate(("Mr. Blue - Song A", "Mr. Blue - Song B")):
        encode_with_av(songs / f"{name}.stem.mp4", make_audio(0.3, 44100, 2, seed=i), 44100, "aac")
    out = tmp_path / "out"
    res = cli("separate", songs, "--target", "drums", "--model", tiny_model_dir, "-o", out, "-q")
    assert res.code == 0, res.err
    assert sorted(p.name for p in out.iterdir()) == ["Mr. Blue - Song A", "Mr. Blue - Song B"]
    a, b = (sf.read(str(out / n / "drums.wav"))[0] for n in sorted(p.name for p in out.iterdir()))
    assert not np.allclose(a[: min(len(a), len(b))], b[: min(len(a), len(b))])


def test_a_failed_track_leaves_no_empty_folder(cli, tmp_path, tiny_model_dir):
    good = write_file(tmp_path / "good.wav", make_audio(0.5, 8000, 1), 8000)
    audio = make_audio(2.0, 8000, 1)
    audio[0, 12000] = np.nan  # fails mid-file, after its output folder was made
    bad = write_file(tmp_path / "bad.wav", audio, 8000, subtype="FLOAT")
    out = tmp_path / "out"
    res = cli(
        "separate", bad, good, "--target", "bass", "--model", tiny_model_dir, "-o", out, "-q",
        "--batch-size", "1",
    )  # fmt: skip
    assert res.code == 2 and "NaN" in res.err
    assert sorted(p.name for p in out.iterdir()) == ["good"]


def test_segment_is_bounded(cli, song, tiny_model_dir):
    line = cli("separate", song, "--target", "a", "--segment", "100000").one_line_error()
    assert "--segment" in line and "from 0.1 to 30 s" in line


def test_evaluate_output_through_a_file_is_one_line(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = cli("evaluate", "--data", tmp_path, "-o", blocker / "x").one_line_error()
    assert f"{blocker} is a file, not a folder" in line


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without MP3")
def test_decoder_notes_add_no_line_to_an_error(tmp_path, tiny_model_dir, capfd):
    from aqsep.cli import main

    full = tmp_path / "full.mp3"
    sf.write(str(full), make_audio(1.0, 44100, 2).T, 44100, format="MP3", subtype="MPEG_LAYER_III")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(full.read_bytes()[:800])
    capfd.readouterr()
    code = main(["separate", str(cut), "--target", "drums", "--model", str(tiny_model_dir)])
    err = capfd.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"aqsep: error: {cut}: ")


def test_targets_all_leaves_a_data_sets_accompaniment_out(cli, tmp_path, song, tiny_model_dir):
    """MIR-1K's "accompaniment" (everything but the voice) is a class to ask for, not a fifth
    stem: with it among the coarse classes, "all" still writes the four that sum to the song."""
    import json
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    classes = json.loads((model / "classes.json").read_text())
    table = classes["classes"] if "classes" in classes else classes
    table["accompaniment"] = dict(table["drums"], level="coarse")
    (model / "classes.json").write_text(json.dumps(classes))
    out = tmp_path / "out"
    res = cli("separate", song, "--targets", "all", "--bits", "32f", "--model", model, "-o", out)
    assert res.code == 0, res.err
    written = sorted(p.stem for p in (out / "song").iterdir())
    assert written == ["bass", "drums", "other", "vocals"]
    stems = [_read(out / "song" / f"{n}.wav") for n in written]
    assert np.abs(sum(stems) - _read(song)).max() < 1e-4
    res = cli("separate", song, "--target", "accompaniment", "--model", model, "-o", out)
    assert res.code == 0, res.err

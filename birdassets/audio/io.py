"""Audio decoding, integrity checks, mono mixdown and resampling.

Everything returns float32 waveforms in [-1, 1] with shape ``[samples]`` (mono) and a sample rate in Hz.
Decoding uses libsndfile (``soundfile``): WAV (RIFF/RF64, 8-bit unsigned, 16/24/32-bit int, 32/64-bit
float, multichannel), FLAC, OGG (Vorbis/Opus) and MP3 (libsndfile >= 1.1), at any positive sample rate
(8-96 kHz is what the tests cover). Resampling uses soxr's high-quality polyphase resampler; several
channels are averaged to one.

Three levels of trust, from cheap to thorough:

* :func:`probe` reads the header (plus, for WAV, the RIFF chunk list; for an OGG that claims no
  frames, the Ogg page list) and raises :class:`AudioError` for a file that is missing, empty,
  unreadable, not audio, corrupt, header-only or visibly truncated. A few file reads; no decoding.
* :func:`verify` also walks every Ogg page and decodes the file (``decode="full"``, streamed in
  blocks, nothing kept) or only its last 4096 frames (``decode="tail"``), so a file that passes
  can be loaded in full. Decoding runs at ~1500x (Vorbis) to ~3000x (FLAC) real time on one core.
* :func:`load` decodes a segment and raises instead of returning fewer samples than the header
  promised for that segment.

Truncation (decided here, used everywhere): a file is **truncated** when its stream ends before
the length its header declares -- a WAV ``data`` chunk declaring more bytes than follow it, an Ogg
stream whose last page is incomplete or lacks the end-of-stream flag, or a decode that stops early
while the file's last frames cannot be decoded either. A decode that stops early although the last
frames *do* decode is **corrupt** (damage in the middle). Truncated files are never silently
shortened: :func:`probe`/:func:`verify` reject them and :func:`load` raises on a short read.

Plausibility (also decided here): a header's sample rate must lie within [:data:`MIN_SAMPLE_RATE`,
:data:`MAX_SAMPLE_RATE`] Hz; the frames it claims must fit in the file's bytes (uncompressed: ``frames x
channels x bytes per sample``; compressed: at most :data:`MAX_FRAMES_PER_BYTE` frames per byte); every decoded
sample must be finite and within +-:data:`MAX_SAMPLE_MAGNITUDE` (a bad value is refused with the count, never
zeroed or clipped). A path that is not a regular file
(FIFO, device, socket) is refused from ``os.stat`` alone, never opened; a symbolic link is followed and a
problem names its target. Messages describe a file in our own words and never quote its bytes.

MP3 frame counts come from the Xing/LAME header when there is one and are estimated from the file
size otherwise, so an MP3 may decode up to :data:`MP3_SHORTFALL_FRAMES` (or 1 %) fewer frames than
``probe`` reported without counting as truncated; :func:`verify` then reports the decoded count.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import soundfile as sf
import soxr

MISSING = "missing"
EMPTY = "empty"
UNREADABLE = "unreadable"
NOT_AUDIO = "not_audio"
CORRUPT = "corrupt"
HEADER_ONLY = "header_only"
TRUNCATED = "truncated"
OUT_OF_RANGE = "out_of_range"
FILE_PROBLEMS: tuple[str, ...] = (MISSING, EMPTY, UNREADABLE, NOT_AUDIO, CORRUPT, HEADER_ONLY, TRUNCATED)
"""Reason codes of :class:`AudioError` that describe the file itself (``out_of_range`` describes a request)."""

TAIL_FRAMES = 4096
"""Frames decoded at the end of a file by the tail check."""
MP3_SHORTFALL_FRAMES = 2 * 1152
"""MP3 decodes may fall this many frames (two MPEG-1 layer III frames), or 1 %, short of the header's count."""
MAX_SAMPLE_MAGNITUDE = 1e6
"""Largest absolute sample value accepted (float files; integer PCM decodes to [-1, 1]). Float audio is nominally
within [-1, 1]; integer-scaled floats reach 32768; larger finite values are garbage that overflows float32
resampling and spectrograms into inf/NaN, so they are refused like NaN/inf."""
MIN_SAMPLE_RATE = 1_000
"""Lowest sample rate (Hz) a header may declare; below it the header is taken as corrupt."""
MAX_SAMPLE_RATE = 384_000
"""Highest sample rate (Hz) a header may declare (the highest rate recorders and DACs offer)."""
MAX_FRAMES_PER_BYTE = 8192
"""Most frames a byte of a compressed stream may hold: FLAC's densest frame (65535 frames of constant
silence in ~16 bytes) holds ~4096; Vorbis/Opus silence ~300. A header claiming more is lying."""
_PCM_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4,
              "FLOAT": 4, "DOUBLE": 8}  # bytes per sample of the uncompressed subtypes
_COMPRESSED_FORMATS = {"FLAC", "OGG", "MPEG", "MP3"}  # containers whose subtype names the decoded samples only

_BLOCK_FRAMES = 1 << 16
_HEAD_BYTES = 64
_MAX_RIFF_CHUNKS = 10_000
_WAV_FORMATS = {"WAV", "WAVEX", "RF64"}
_UNSET_SIZES = {0xFFFFFFFF}  # a streaming writer's "size unknown" marker in RIFF headers


class AudioError(ValueError):
    """An audio file cannot be used. The message always names the file and the problem.

    Attributes:
        path: the file.
        problem: what is wrong, in words (the message without the path).
        reason: a stable short code: one of :data:`FILE_PROBLEMS`, or ``"out_of_range"`` for a
            requested segment that lies outside the file.
    """

    def __init__(self, path: str | Path, problem: str, reason: str = CORRUPT):
        self.path = str(path)
        self.problem = problem
        self.reason = reason
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem, self.reason)


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file.

    Attributes:
        path: the file.
        sample_rate: native rate, Hz.
        channels: channel count.
        frames: samples per channel.
        format: container (e.g. ``"OGG"``, ``"WAV"``).
        subtype: sample encoding (e.g. ``"VORBIS"``, ``"PCM_16"``).
    """

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


# ------------------------------------------------------------------------------------------- sniffing


def sniff(head: bytes) -> str | None:
    """The audio container a file's first bytes announce (``"WAV"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``,
    ``"AIFF"``, ``"CAF"``, ``"AU"``, ``"W64"``), or ``None`` when they match no audio signature."""
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "OGG"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    if len(head) >= 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if head[:4] == b"caff":
        return "CAF"
    if head[:4] == b".snd":
        return "AU"
    if head[:4] == b"riff":
        return "W64"
    return None


def _describe_head(head: bytes) -> str:
    """What a file's first bytes look like, in our own words: never the bytes themselves (they may be anyone's
    file, e.g. a link to ``/etc/passwd``, and the description goes into the quarantine table)."""
    if not head:
        return "no bytes"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head) / len(head)
    if printable > 0.95:
        return "text"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "a PNG image"
    if head[:3] == b"\xff\xd8\xff":
        return "a JPEG image"
    if head[:4] == b"%PDF":
        return "a PDF document"
    if head[:4] == b"PK\x03\x04":
        return "a ZIP archive"
    return "unrecognised binary data"


# --------------------------------------------------------------------------------- structural checks


@dataclass(frozen=True)
class _WavData:
    declared_bytes: int | None  # None: the header leaves the size unset (streaming writer)
    present_bytes: int
    bytes_per_second: int


def _wav_data(handle: BinaryIO, size: int) -> _WavData | None:
    """Declared vs present bytes of a RIFF/RF64 WAV ``data`` chunk; ``None`` when no chunk is found."""
    handle.seek(0)
    riff = handle.read(12)
    if len(riff) < 12:
        return None
    rf64 = riff[:4] in (b"RF64", b"BW64")
    ds64_data: int | None = None
    bytes_per_second = 0
    position = 12
    for _ in range(_MAX_RIFF_CHUNKS):
        handle.seek(position)
        header = handle.read(8)
        if len(header) < 8:
            return None
        chunk, chunk_size = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk == b"ds64" and rf64:
            body = handle.read(16)
            if len(body) == 16:
                ds64_data = struct.unpack("<Q", body[8:16])[0]
        elif chunk == b"fmt ":
            body = handle.read(16)
            if len(body) >= 12:
                bytes_per_second = struct.unpack("<I", body[8:12])[0]
        elif chunk == b"data":
            present = max(0, size - position - 8)
            declared: int | None = chunk_size
            if rf64 and chunk_size == 0xFFFFFFFF:
                declared = ds64_data
            elif chunk_size in _UNSET_SIZES:
                declared = None
            return _WavData(declared, present, bytes_per_second)
        position += 8 + chunk_size + (chunk_size & 1)
        if position >= size:
            return None
    return None


@dataclass(frozen=True)
class _OggPages:
    pages: int
    last_granule: int
    complete: bool  # every page lies entirely inside the file
    ends_stream: bool  # the last page carries the end-of-stream flag
    problem: str | None  # lost page capture (garbage between pages)


def _ogg_pages(handle: BinaryIO, size: int) -> _OggPages:
    """Walk an Ogg file's page headers (27 bytes + segment table each), seeking over page bodies."""
    position, pages, last_granule, flags = 0, 0, -1, 0
    while position < size:
        handle.seek(position)
        header = handle.read(27)
        if len(header) < 27:
            return _OggPages(pages, last_granule, False, False, None)
        if header[:4] != b"OggS":
            return _OggPages(pages, last_granule, True, False, f"no Ogg page at byte {position} (after {pages} pages)")
        segments = handle.read(header[26])
        if len(segments) < header[26]:
            return _OggPages(pages, last_granule, False, False, None)
        end = position + 27 + len(segments) + sum(segments)
        if end > size:
            return _OggPages(pages, last_granule, False, False, None)
        pages += 1
        flags = header[5]
        granule = struct.unpack("<q", header[6:14])[0]
        if granule != -1:
            last_granule = granule
        position = end
    return _OggPages(pages, last_granule, True, bool(flags & 0x04), None)


def _wav_problem(path: Path, handle: BinaryIO, size: int, frames: int) -> AudioError | None:
    data = _wav_data(handle, size)
    if data is None:
        return AudioError(path, "WAV file without a readable 'data' chunk", CORRUPT)
    if data.declared_bytes is None:
        return None
    if data.declared_bytes == 0 and data.present_bytes > 0 and frames == 0:
        return AudioError(
            path,
            f"WAV header not finalised: the 'data' chunk declares 0 bytes but {data.present_bytes} bytes "
            "follow it (an interrupted recording; repair the header to use it)",
            CORRUPT,
        )
    if data.declared_bytes > data.present_bytes:
        missing = data.declared_bytes - data.present_bytes
        seconds = f", about {missing / data.bytes_per_second:.3f} s of audio" if data.bytes_per_second else ""
        return AudioError(
            path,
            f"truncated: the WAV 'data' chunk declares {data.declared_bytes} bytes but only "
            f"{data.present_bytes} are in the file ({missing} bytes{seconds} missing)",
            TRUNCATED,
        )
    return None


# ------------------------------------------------------------------------------------------ probing


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def regular_file_size(path: str | Path) -> int:
    """Size in bytes of the regular file at ``path`` (symbolic links followed), from ``os.stat`` alone.

    A FIFO, device, socket or folder is refused without being opened (opening a FIFO blocks until a
    writer comes; reading a device may never end).

    Raises:
        AudioError: ``missing`` (nothing there, or a broken link), ``unreadable`` (cannot be stat'ed, or
            not a regular file), ``empty`` (0 bytes).
    """
    path = Path(path)
    try:
        status = path.stat()
    except FileNotFoundError:
        problem = "is a broken symbolic link" if path.is_symlink() else "does not exist"
        raise AudioError(path, f"file {problem}", MISSING) from None
    except OSError as error:
        raise AudioError(path, f"cannot be accessed ({error.strerror or error})", UNREADABLE) from error
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for is_kind, name in _FILE_KINDS if is_kind(status.st_mode)), "a special file")
        raise AudioError(path, f"is {kind}, not a regular file (skipped without opening it)", UNREADABLE)
    if status.st_size == 0:
        raise AudioError(path, "is empty (0 bytes)", EMPTY)
    return status.st_size


def link_target(path: str | Path) -> str | None:
    """The fully resolved target of ``path`` when ``path`` itself is a symbolic link, else ``None``."""
    path = Path(path)
    return os.path.realpath(path) if path.is_symlink() else None


def probe(path: str | Path) -> AudioInfo:
    """Read an audio file's header without decoding its samples (see the module docstring).

    Raises:
        AudioError: the file is missing, empty, unreadable, not a regular file, not audio, corrupt, has a
            header but no frames, an implausible rate or frame count, or is visibly truncated;
            ``error.reason`` says which. For a symbolic link the problem starts with its target.
    """
    path = Path(path)
    try:
        return _probe(path)
    except AudioError as error:
        target = link_target(path)
        if target is None:
            raise
        raise AudioError(path, f"symbolic link to {target}: {error.problem}", error.reason) from error


def _probe(path: Path) -> AudioInfo:
    size = regular_file_size(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
            info = _header(path, head)
            frames = max(0, int(info.frames))
            if str(info.format) in _WAV_FORMATS and head[:4] in (b"RIFF", b"RF64", b"BW64"):
                problem = _wav_problem(path, handle, size, frames)
                if problem is not None:
                    raise problem
            problem = _implausible(path, info, frames, size)
            if problem is not None:
                raise problem
            if frames == 0:
                raise _no_frames(path, handle, size, str(info.format))
    except PermissionError as error:
        raise AudioError(path, f"cannot be read ({error.strerror or 'permission denied'})", UNREADABLE) from error
    return AudioInfo(
        path=str(path),
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=frames,
        format=str(info.format),
        subtype=str(info.subtype),
    )


def _header(path: Path, head: bytes):
    """libsndfile's header facts (``soundfile._SoundFileInfo``); an :class:`AudioError` when it cannot parse it."""
    try:
        info = sf.info(str(path))
    except Exception as error:  # libsndfile raises LibsndfileError / RuntimeError
        container = sniff(head)
        if container is None:
            raise AudioError(
                path, f"not an audio file: it starts with {_describe_head(head)}, no audio container signature",
                NOT_AUDIO,
            ) from error
        raise AudioError(path, f"looks like {container} but cannot be parsed ({_libsndfile_message(error)})") from error
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(path, f"invalid header (rate={info.samplerate} Hz, channels={info.channels})")
    return info


def _implausible(path: Path, info, frames: int, size: int) -> AudioError | None:
    """A header whose sample rate is outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] or whose frames cannot fit in
    ``size`` bytes (see the module docstring); ``None`` when it is plausible."""
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        return AudioError(
            path,
            f"implausible sample rate in the header: {info.samplerate} Hz "
            f"(expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)",
            CORRUPT,
        )
    sample_bytes = None if str(info.format) in _COMPRESSED_FORMATS else _PCM_BYTES.get(str(info.subtype))
    most = size // (sample_bytes * info.channels) if sample_bytes else size * MAX_FRAMES_PER_BYTE
    if frames > most:
        return AudioError(
            path,
            f"truncated: the header claims {frames} frames ({frames / info.samplerate:.3f} s) but the file's "
            f"{size} bytes can hold at most {most}",
            TRUNCATED,
        )
    return None


def _no_frames(path: Path, handle: BinaryIO, size: int, container: str) -> AudioError:
    """The error for a header that declares no frames: a truncated Ogg stream, or a header-only file."""
    if container == "OGG":
        pages = _ogg_pages(handle, size)
        if not pages.complete or not pages.ends_stream:
            where = f"after {pages.pages} pages" if pages.complete else f"inside page {pages.pages + 1}"
            return AudioError(
                path, f"truncated: the Ogg stream breaks off {where} ({size} bytes) before any audio frame", TRUNCATED
            )
    return AudioError(path, f"valid {container} header but no audio frames", HEADER_ONLY)


def _libsndfile_message(error: BaseException) -> str:
    """libsndfile's description of ``error`` from its fixed table of messages (by error code), printable ASCII
    only; never the exception's own text (it repeats the path and, for other decoders, may quote file bytes)."""
    code = getattr(error, "code", None)
    if code == 7:  # SFE_BAD_FILE: what the MP3 reader says when mpg123 finds no MPEG frame
        return "the decoder found no decodable frame"
    described = ""
    if isinstance(code, int) and code:
        try:
            described = sf._ffi.string(sf._snd.sf_error_number(code)).decode("ascii", errors="replace")
        except Exception:  # noqa: BLE001 - best effort only
            described = ""
    described = "".join(c for c in described if 32 <= ord(c) < 127).strip()[:200]
    return described or f"{type(error).__name__} from the decoder"


def _tolerance(info: AudioInfo) -> int:
    """Frames a complete decode may fall short of ``info.frames`` (non-zero only for MP3 estimates)."""
    return max(MP3_SHORTFALL_FRAMES, info.frames // 100) if info.format == "MP3" else 0


def _tail_decodes(path: Path, info: AudioInfo) -> bool:
    """Whether the last :data:`TAIL_FRAMES` frames the header promises can be decoded."""
    start = max(0, info.frames - TAIL_FRAMES)
    want = info.frames - start
    try:
        with sf.SoundFile(str(path)) as handle:
            handle.seek(start)
            got = len(handle.read(want, dtype="float32", always_2d=True))
    except Exception:  # noqa: BLE001 - any decoder failure means "does not decode"
        return False
    return got >= want - _tolerance(info)


@dataclass
class _BadSamples:
    """Sample values no audio holds, seen while decoding: NaN/inf, and finite ones beyond
    :data:`MAX_SAMPLE_MAGNITUDE`; ``first_frame`` is the first frame holding one (-1: none)."""

    nonfinite: int = 0
    huge: int = 0
    first_frame: int = -1

    def add(self, block: np.ndarray, first_frame: int) -> None:
        """Count the bad values of ``block [frames, channels]`` whose first row is frame ``first_frame``."""
        good = np.abs(block) <= MAX_SAMPLE_MAGNITUDE  # False for NaN and inf too: one pass for good audio
        if good.all():
            return
        finite = np.isfinite(block)
        if self.first_frame < 0:
            self.first_frame = first_frame + int(np.argmin(good.all(axis=1)))
        nonfinite = int(finite.size - np.count_nonzero(finite))
        self.nonfinite += nonfinite
        self.huge += int(good.size - np.count_nonzero(good)) - nonfinite

    @property
    def count(self) -> int:
        return self.nonfinite + self.huge

    def problem(self, frames: int, sample_rate: int) -> str:
        """The refusal, with the counts (the samples are never silently zeroed or clipped)."""
        parts = [f"{self.nonfinite} non-finite (NaN/inf) sample values"] if self.nonfinite else []
        if self.huge:
            parts.append(f"{self.huge} sample values beyond +-{MAX_SAMPLE_MAGNITUDE:g} (not audio)")
        return (
            f"corrupt: {' and '.join(parts)} in {frames} frames, the first at frame {self.first_frame} "
            f"({self.first_frame / sample_rate:.3f} s); refused, not zeroed"
        )


def _decode_stream(path: Path, frames: int) -> tuple[int, str | None, _BadSamples]:
    """Decode up to ``frames`` frames in blocks, keeping nothing: ``(frames decoded, the decoder's failure or
    None, the bad sample values seen)``."""
    decoded, failure, bad_samples = 0, None, _BadSamples()
    try:
        with sf.SoundFile(str(path)) as handle:
            while decoded < frames:
                block = handle.read(min(_BLOCK_FRAMES, frames - decoded), dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                bad_samples.add(block, decoded)
                decoded += len(block)
    except Exception as error:  # noqa: BLE001 - libsndfile raises LibsndfileError / RuntimeError
        failure = _libsndfile_message(error)
    return decoded, failure, bad_samples


def verify(path: str | Path, decode: Literal["full", "tail"] = "full") -> AudioInfo:
    """:func:`probe`, then prove the file decodes (see the module docstring for the rules).

    Args:
        path: audio file.
        decode: ``"full"`` decodes every frame (streamed, ``65536``-frame blocks, nothing kept) and
            also rejects NaN/inf samples (the message counts them); ``"tail"`` decodes only the last
            :data:`TAIL_FRAMES` frames
            (catches truncation, not damage in the middle).

    Returns:
        The header facts; with ``decode="full"``, ``frames`` is the decoded count (it differs from
        the header only for MP3 estimates, within :func:`_tolerance`).

    Raises:
        AudioError: as :func:`probe`, plus ``"truncated"`` / ``"corrupt"`` from the checks.
    """
    path = Path(path)
    if decode not in ("full", "tail"):
        raise ValueError(f"decode must be 'full' or 'tail', got {decode!r}")
    info = probe(path)
    if info.format == "OGG":
        try:
            with open(path, "rb") as handle:
                pages = _ogg_pages(handle, os.fstat(handle.fileno()).st_size)
        except OSError as error:
            raise AudioError(path, f"cannot be read ({error.strerror or error})", UNREADABLE) from error
        if pages.problem:
            raise AudioError(path, f"corrupt Ogg stream: {pages.problem}", CORRUPT)
        if not pages.complete or not pages.ends_stream:
            where = "breaks off inside a page" if not pages.complete else "has no end-of-stream page"
            raise AudioError(
                path,
                f"truncated: the Ogg stream {where} after {pages.pages} pages ({info.duration_s:.3f} s declared)",
                TRUNCATED,
            )
    if decode == "tail":
        if not _tail_decodes(path, info):
            raise AudioError(path, f"truncated: the last frames of {info.frames} declared cannot be decoded", TRUNCATED)
        return info
    decoded, failure, bad_samples = _decode_stream(path, info.frames)
    if bad_samples.count:
        raise AudioError(path, bad_samples.problem(decoded, info.sample_rate), CORRUPT)
    if decoded >= info.frames - _tolerance(info):
        return dataclasses.replace(info, frames=decoded) if decoded != info.frames else info
    stopped = (
        f"decoding stopped after {decoded} of {info.frames} frames "
        f"({decoded / info.sample_rate:.3f} of {info.duration_s:.3f} s): {failure or 'the stream ends early'}"
    )
    if _tail_decodes(path, info):
        raise AudioError(path, f"corrupt: {stopped}; the end of the file decodes, so the damage is inside", CORRUPT)
    raise AudioError(path, f"truncated: {stopped}", TRUNCATED)


# ------------------------------------------------------------------------------------------ decoding


def require_finite(path: str | Path, what: str, array: np.ndarray) -> np.ndarray:
    """``array`` unchanged when every value is finite; else an :class:`AudioError` (``corrupt``) naming the file
    it was computed from, ``what`` it is and how many values are NaN/inf. Used on everything derived from
    audio before it is written (spectrograms, embeddings, confidences), so no NaN reaches an output file."""
    values = np.asarray(array)
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise AudioError(path, f"corrupt: {what} has {bad} non-finite (NaN/inf) values of {values.size}", CORRUPT)
    return array


def mixdown(audio: np.ndarray) -> np.ndarray:
    """Average channels: ``[samples, channels]`` (or ``[samples]``) -> ``[samples]`` float32."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio if audio.ndim == 1 else audio.mean(axis=1, dtype=np.float32)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample a mono ``[samples]`` float32 waveform from ``rate_in`` Hz to ``rate_out`` Hz (soxr HQ)."""
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float32)
    return soxr.resample(np.asarray(audio, dtype=np.float32), rate_in, rate_out, quality="HQ").astype(np.float32)


def load(
    path: str | Path,
    sample_rate: int | None = None,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode (a segment of) a file to mono float32.

    A segment may end past the end of the file (it is cut at the file's end, callers zero-pad); it
    may not start at or after it.

    Args:
        path: audio file.
        sample_rate: target rate in Hz; ``None`` keeps the native rate.
        start_s: segment start, seconds.
        end_s: segment end, seconds (``None``: end of file).

    Returns:
        ``(waveform [samples] float32, sample_rate Hz)``.

    Raises:
        AudioError: the file fails :func:`probe`; decoding fails (``"corrupt"``); fewer frames decode
            than the header promises for the segment (``"truncated"``); a decoded sample is NaN/inf or
            resampling gives one, or a sample exceeds :data:`MAX_SAMPLE_MAGNITUDE` (``"corrupt"``, with the
            count); or the segment starts past the end
            (``"out_of_range"``). The message names the file. The waveform returned is always finite.
    """
    info = probe(path)
    start = max(0, round(start_s * info.sample_rate))
    stop = info.frames if end_s is None else min(info.frames, round(end_s * info.sample_rate))
    if stop <= start:
        raise AudioError(
            path, f"no samples in [{start_s}, {end_s}] s (the file lasts {info.duration_s:.3f} s)", OUT_OF_RANGE
        )
    try:
        audio, rate = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as error:
        message = _libsndfile_message(error)
        if not _tail_decodes(Path(path), info):
            raise AudioError(
                path, f"truncated: decoding failed and the file's last frames do not decode ({message})", TRUNCATED
            ) from error
        raise AudioError(path, f"corrupt: decoding failed ({message})", CORRUPT) from error
    tolerance = _tolerance(info) if stop > info.frames - _tolerance(info) else 0  # MP3 estimates: only at the end
    if audio.shape[0] == 0 or (stop - start) - audio.shape[0] > tolerance:
        raise AudioError(
            path,
            f"truncated: decoded {audio.shape[0]} of the {stop - start} frames its header promises in "
            f"[{start / info.sample_rate:.3f}, {stop / info.sample_rate:.3f}] s",
            TRUNCATED,
        )
    bad_samples = _BadSamples()
    for first in range(0, audio.shape[0], _BLOCK_FRAMES):  # in blocks: the temporaries stay small
        bad_samples.add(audio[first : first + _BLOCK_FRAMES], start + first)
    if bad_samples.count:
        raise AudioError(path, bad_samples.problem(audio.shape[0], int(rate)), CORRUPT)
    mono = mixdown(audio)
    if sample_rate is not None and sample_rate != rate:
        mono = _resampled(path, mono, int(rate), sample_rate)
        rate = sample_rate
    return mono, int(rate)


def _resampled(path: str | Path, mono: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """:func:`resample`, with a failure or a non-finite result (finite but huge samples) named as the file's."""
    try:
        out = resample(mono, rate_in, rate_out)
    except Exception as error:  # noqa: BLE001 - soxr raises RuntimeError / ValueError / MemoryError
        problem = f"corrupt: resampling {rate_in} -> {rate_out} Hz failed ({type(error).__name__})"
        raise AudioError(path, problem) from error
    return require_finite(path, f"resampling {rate_in} -> {rate_out} Hz (samples too large)", out)

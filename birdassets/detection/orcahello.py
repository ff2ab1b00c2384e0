"""OrcaHello's inference class: a window classifier, a threshold and a minimum number of positive windows.

``OrcaHello(model, threshold=0.5, min_num_positive_calls_threshold=3).predict(path)`` cuts the recording into
OrcaHello's 2 s windows every 1 s, scores each with the model's probability of ``call``
(:class:`~birdassets.detection.scorers.ClassifierScorer`) and applies the decision rule of
:mod:`birdassets.detection.rule`: per-window confidences and local predictions, the global prediction and
confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from birdassets.audio.io import AudioError
from birdassets.detection.rule import DetectionConfig, DetectionResult, RecordingDetections, detect_recordings
from birdassets.detection.scorers import ClassifierScorer

CALL_TARGET = ("call",)


@dataclass
class OrcaHello:
    """A call detector over recordings.

    Attributes:
        model: a window classifier (``name``, ``classes``, ``input_spec``, ``probabilities``), e.g. the
            :class:`~birdassets.models.resnet.runtime.ResNetDetector` of a checkpoint or an exported folder.
        threshold: a window is positive when its confidence is strictly above this.
        min_num_positive_calls_threshold: positive windows needed for ``global_prediction = 1``.
        preset: the model's frontend preset (``None``: the built-in preset its input names).
        targets: the classes whose probability is the window confidence.
        clip_s, hop_s: windows, seconds (OrcaHello: 2 s every 1 s).
    """

    model: object
    threshold: float = 0.5
    min_num_positive_calls_threshold: int = 3
    preset: object = None
    targets: Sequence[str] = CALL_TARGET
    clip_s: float = 2.0
    hop_s: float = 1.0
    scorer: ClassifierScorer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.preset is None:
            from birdassets.frontends.presets import get_preset

            self.preset = get_preset(self.model.input_spec.preset)
        self.scorer = ClassifierScorer(self.model, self.targets, self.preset)

    @property
    def rule(self) -> DetectionConfig:
        return DetectionConfig(clip_s=self.clip_s, hop_s=self.hop_s, threshold=self.threshold,
                               min_num_positive_calls=self.min_num_positive_calls_threshold)

    def predict(self, path: str | Path) -> RecordingDetections:
        """One recording's window starts and confidences, local predictions and global decision.

        Raises:
            AudioError: the file cannot be decoded (the message names it).
        """
        result = self.predict_many([path])
        if result.failed:
            raise AudioError(result.failed[0][1])
        return result.recordings[0]

    def predict_many(self, paths: Sequence[str | Path]) -> DetectionResult:
        """Many recordings scored together (batched); unreadable ones in ``failed``, never stopping the others."""
        return detect_recordings(paths, self.scorer, self.rule)

"""Deterministic synthetic audio, so the platform runs without downloads: bird calls in BirdCLEF layout
(``demo-clear``, ``demo-noisy``, ``demo-pretrain``) and hydrophone clips for a killer-whale call detector
(``demo-orca``).

The bird tasks, in four modules read in this order:

* :mod:`~birdassets.sources.demo.species`: 12 invented species (eBird-style 6-letter codes such as
  ``"glawar"``), each with a parametric call, and the task specs (:data:`DEMO_TASKS`);
* :mod:`~birdassets.sources.demo.synthesis`: field noise, phrases, focal recordings and soundscapes;
* :mod:`~birdassets.sources.demo.publishing`: what every layout shares (spec digest, ``.complete``, atomic publish);
* :mod:`~birdassets.sources.demo.writing`: OGG files, label tables, and the entry points :func:`generate`,
  :func:`is_complete` and :func:`read_demo`, which take any demo data set.

Output (BirdCLEF layout, read back by :func:`birdassets.sources.birdclef.read_birdclef`)::

    root/train.csv                                   BirdCLEF columns, one row per focal recording
    root/train_audio/<code>/<code>_<nnn>.ogg         focal recordings, 4-15 s
    root/test_soundscapes/<task>_sc<nnn>.ogg         soundscapes of ``windows_per_soundscape`` x 5 s
    root/soundscape_labels.csv                       filename, start_s, end_s, labels (space-separated)
    root/train_soundscapes/<task>_u<nnn>.ogg         unlabelled 1-minute soundscapes (what ``submit`` predicts)
    root/sample_submission.csv                       row_id = <stem>_<window end s>, one 0 column per species
    root/demo_spec.json                              the task spec and species table used
    root/.complete                                   the spec hash; written last

Soundscapes are continuous noise; each 5-s window gets its own set of species (1-2 in ``demo-clear``,
2-4 in ``demo-noisy``) whose phrases lie entirely inside the window, so window labels are exact.
Every species appears in at least one test window (when there are at least as many windows as species).

Audio is OGG Vorbis, 32 kHz mono, each file peak-normalised to ``peak`` (0.7). Generation is deterministic:
every file draws from its own ``SeedSequence([seed, stream, i, j])`` and the OGG serial number is stamped, so
the same spec gives byte-identical files. :func:`generate` is idempotent and atomic.

``demo-orca`` (:data:`ORCA_TASKS`): :mod:`~birdassets.sources.demo.hydrophone` synthesises hydrophone noise and
pulsed calls, :mod:`~birdassets.sources.demo.orca_clips` holds the spec (:class:`OrcaDemoSpec`) and writes 20 kHz FLAC
clips in the clips layout (read back by :func:`birdassets.sources.clips.read_clips`) plus held-out long recordings
with their call tables.
"""

from birdassets.sources.demo.species import (
    CALL_KINDS,
    DEMO_TASKS,
    GENERATOR_VERSION,
    SPECIES,
    DemoTaskSpec,
    SpeciesCall,
    resolve_task,
)
from birdassets.sources.demo.orca_clips import ORCA_TASKS, OrcaDemoSpec
from birdassets.sources.demo.publishing import COMPLETE_MARKER
from birdassets.sources.demo.synthesis import soundscape, train_recording, unlabelled_soundscape, window_species_plan
from birdassets.sources.demo.writing import generate, is_complete, read_demo, resolve_demo

__all__ = [
    "CALL_KINDS",
    "COMPLETE_MARKER",
    "DEMO_TASKS",
    "GENERATOR_VERSION",
    "ORCA_TASKS",
    "SPECIES",
    "DemoTaskSpec",
    "OrcaDemoSpec",
    "SpeciesCall",
    "generate",
    "is_complete",
    "read_demo",
    "resolve_demo",
    "resolve_task",
    "soundscape",
    "train_recording",
    "unlabelled_soundscape",
    "window_species_plan",
]

"""``birdassets tidhy``: the TiDHy dynamics model's own benchmark.

* ``birdassets tidhy benchmark [--small] [--seed N]``: generate the SLDS data (3 switching linear dynamical
  systems, mixed and projected observations), train TiDHy into ``<first checkpoint root>/tidhy-slds[-small]-
  seed<N>`` (Orbax checkpoints; a re-run resumes there, and a finished run is only scored again), decode the 8
  joint discrete states by k-NN from ``r2`` and ``r`` and from a PCA baseline, print the table (``r2_knn_acc``,
  ``r_knn_acc``, ``pca_knn_acc``, ``recon_r2``) and record it in DuckDB under task ``slds`` with lineage.
  ``--small`` is the CI-sized run.
"""

from __future__ import annotations

import argparse

from birdassets.cli.birdclef import run_id


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``tidhy`` and its subcommand ``benchmark``."""
    tidhy = commands.add_parser("tidhy", help="TiDHy dynamics model: the SLDS benchmark")
    actions = tidhy.add_subparsers(dest="action", required=True, metavar="{benchmark}")
    bench = actions.add_parser("benchmark", help="train and score TiDHy on the SLDS task; scores to DuckDB")
    bench.add_argument("--small", action="store_true", help="the CI-sized run (4000 steps of training data, "
                       "150 updates; the full run: 20000 and 600)")
    bench.add_argument("--seed", type=int, default=0, help="seed of the data, the model and the k-NN split")
    bench.set_defaults(func=cmd_benchmark)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from birdassets.models.tidhy.benchmark import SCORE_NAMES
    from birdassets.settings import load_settings
    from birdassets.steps import slds_benchmark

    report = slds_benchmark(load_settings(), args.seed, args.small, run_id("tidhy-benchmark"),
                            on_step=progress_printer())
    width = max(map(len, SCORE_NAMES))
    print(f"\nSLDS benchmark {report.checkpoint} (task slds, run {report.run_id})")
    for name in SCORE_NAMES:
        print(f"  {name:<{width}}  {report.scores[name]:.4f}")
    training = (f"training {report.scores['train_seconds']:.1f} s ({report.scores['steps_per_s']:.2f} steps/s)"
                if report.scores["steps_per_s"] else "already trained: the run's last checkpoint was scored")
    print(f"  inference iterations per step {report.scores['inference_iterations']:.1f}; {training}")
    print(f"recorded in {report.db_path}")
    return 0


def progress_printer(every: int = 25):
    """``on_step`` that prints the loss every ``every`` steps."""
    def on_step(step: int, terms: dict[str, float]) -> None:
        if step % every == 0:
            print(f"  step {step}: loss {terms['total']:.3f}", flush=True)
    return on_step

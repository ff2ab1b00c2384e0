"""Training: bit-exact resume, checkpoint layout, crash safety, 2-device data parallelism, bf16, config, optimizer.

Every run trains the ``tiny`` ViT (dim 64, depth 2) on a real mel dataset of 12 ten-second tones of three
"species" (24 windows), a few steps at batch 8, with real asynchronous Orbax checkpoints on disk.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from birdassets.checkpoints import COMMIT_MARKER, CheckpointError, discover_checkpoints, finalized_steps
from birdassets.checkpoints.orbax_io import read_metadata
from birdassets.datasets.mel_tfds import MelDataset, build_mel_dataset
from birdassets.frontends.presets import get_preset
from birdassets.models.vit import ViTEncoder, encoder_params, vit_config
from birdassets.models.vit.family import restore_encoder
from birdassets.sources.manifest import Manifest, file_sha256
from birdassets.train.config import TrainConfig, TrainConfigError
from birdassets.train.stream import training_stream
from birdassets.train.loop import HISTORY, holdout_mask, train
from birdassets.train.objectives import TrainModel, losses
from birdassets.train.optim import decay_mask, learning_rate_schedule, make_optimizer
from birdassets_tests.conftest import tone, write_recording

PRESET = get_preset("birdclef2025")
SPECIES = (("lo", 800.0), ("mid", 2500.0), ("hi", 6000.0))
REPO = Path(__file__).resolve().parents[1]

BASE = TrainConfig(
    model="tiny", objective="mae", num_steps=8, warmup_steps=2, batch_size=8, log_every=1, checkpoint_every=4,
    shuffle_buffer=64, seed=0,
)
"""The reference run: 8 steps, every step logged, checkpoints at 0, 4, 8."""


class Interrupted(Exception):
    """Raised from the ``log`` callback to stop a run mid-way, as Ctrl-C or a pre-emption would."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> MelDataset:
    """12 recordings of 10 s at 32 kHz (3 species, 4 recordings each, slightly detuned) -> 24 train windows."""
    root = tmp_path_factory.mktemp("training_data")
    rows = []
    for i in range(12):
        label, freq = SPECIES[i % 3]
        path = write_recording(root / "audio" / f"r{i}.wav", tone(freq * (1 + 0.05 * (i // 3)), 10.0, 32_000, seed=i),
                               32_000)
        rows.append(dict(recording_id=f"r{i}", path=str(path), duration_s=10.0, sample_rate=32_000, channels=1,
                         primary_label=label, labels=[label], split="train", sha256=file_sha256(path)))
    return build_mel_dataset(Manifest.from_rows(rows), PRESET, root / "mel")


@pytest.fixture(scope="module")
def straight(dataset, tmp_path_factory):
    """The reference run, uninterrupted, in ``<tmp>/runs/straight``."""
    run_dir = tmp_path_factory.mktemp("runs") / "straight"
    return train(BASE, dataset, run_dir, progress=False)


def leaves(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def assert_trees_equal(actual, expected) -> None:
    """Same keys, dtypes and bits in every leaf."""
    actual, expected = leaves(actual), leaves(expected)
    assert actual.keys() == expected.keys()
    different = [k for k in expected
                 if actual[k].dtype != expected[k].dtype or not np.array_equal(actual[k], expected[k])]
    assert not different, f"leaves differ: {different}"


def wait_for_finalized(run_dir: Path, step: int, timeout_s: float = 120.0) -> None:
    """Wait for the background write of an interrupted run's last save (its manager was never closed)."""
    deadline = time.monotonic() + timeout_s
    while step not in finalized_steps(run_dir):
        assert time.monotonic() < deadline, f"step {step} never finalized in {run_dir}: {sorted(os.listdir(run_dir))}"
        time.sleep(0.05)


def step_dirs(run_dir: Path) -> list[str]:
    return sorted((p.name for p in run_dir.iterdir() if p.is_dir()), key=lambda name: (len(name), name))


# --------------------------------------------------------------------------- resume


def test_interrupted_run_resumes_bit_for_bit(dataset, straight, tmp_path):
    config = BASE.replace(max_checkpoints=2)  # keeping fewer checkpoints changes no number
    run_dir = tmp_path / "interrupted"

    def stop_at_step_5(line: str) -> None:
        if json.loads(line)["step"] == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(config, dataset, run_dir, progress=False, log=stop_at_step_5)
    wait_for_finalized(run_dir, 4)
    assert finalized_steps(run_dir) == [0, 4]
    written = [json.loads(line)["step"] for line in (run_dir / HISTORY).read_text().splitlines()]
    assert written == [0, 1, 2, 3, 4]  # the history reached disk with the step-4 save

    resumed = train(config, dataset, run_dir, progress=False)
    assert (resumed.start_step, resumed.final_step) == (4, 8)
    assert_trees_equal(resumed.params, straight.params)  # encoder, objective head, probe
    # the same losses, gradient norms and probe cmAP at every step; steps 0-4 come from the first call
    assert [h["step"] for h in resumed.history] == list(range(9))
    assert resumed.history == straight.history
    assert finalized_steps(run_dir) == [4, 8]  # max_checkpoints=2 dropped step 0 after the resume saved 8

    encoder_a, config_a, _ = restore_encoder(straight.run_dir, 8)
    encoder_b, config_b, _ = restore_encoder(run_dir, 8)
    assert config_a == config_b
    assert_trees_equal(encoder_params(encoder_b), encoder_params(encoder_a))

    # nothing left to do: same step, no new checkpoint, the params of step 8
    before = step_dirs(run_dir)
    again = train(config, dataset, run_dir, progress=False)
    assert (again.start_step, again.final_step, again.steps_timed) == (8, 8, 0)
    assert step_dirs(run_dir) == before and finalized_steps(run_dir) == [4, 8]
    assert again.history == straight.history
    assert_trees_equal(again.params, straight.params)


# --------------------------------------------------------------------------- layout


def test_checkpoint_layout_metadata_and_encoder_restore(dataset, straight):
    run_dir = straight.run_dir
    assert finalized_steps(run_dir) == [0, 4, 8]
    assert (straight.start_step, straight.final_step) == (0, 8)
    assert straight.steps_timed == 7  # step 1 compiles; steps 2-8 are timed

    metadata = read_metadata(run_dir, 8)
    assert (metadata["step"], metadata["family"], metadata["objective"]) == (8, "vit", "mae")
    assert metadata["train_config"] == BASE.to_dict()
    assert metadata["metrics"] == straight.history[-1]  # step 8 was logged: its record travels with it
    assert read_metadata(run_dir, 4)["metrics"]["loss"] == straight.history[4]["loss"]
    assert set(read_metadata(run_dir, 0)["metrics"]) == {"step", "probe_cmap"}

    # restore_encoder reads state.encoder alone from a training checkpoint (probe/objective/opt_state are there too)
    encoder, config, step = restore_encoder(run_dir)
    frames, mels = dataset.builder().info.features["mel"].shape
    assert step == 8
    assert config == vit_config("tiny", frames=frames, mels=mels, preset=PRESET.name,
                                sample_rate=PRESET.sample_rate, clip_s=PRESET.clip_s)
    assert (config.dim, config.depth) == (64, 2)
    assert_trees_equal(encoder_params(encoder), straight.params["encoder"])

    # step 0 is the initialisation of the seed, and training moved the encoder parameters away from it
    # (all but attention key biases, whose gradient is 0 in exact arithmetic: softmax ignores a shared shift)
    initial = TrainModel(config, "mae", len(dataset.classes()), rngs=nnx.Rngs(BASE.seed)).encoder
    encoder_0, _, _ = restore_encoder(run_dir, 0)
    assert_trees_equal(encoder_params(encoder_0), encoder_params(initial))
    trained_leaves = leaves(straight.params["encoder"])
    unchanged = [k for k, v in leaves(encoder_params(encoder_0)).items()
                 if "['key']['bias']" not in k and np.array_equal(v, trained_leaves[k])]
    assert not unchanged

    # and the restored encoder embeds exactly as an encoder built from the trained params does
    graphdef, state = nnx.split(nnx.eval_shape(lambda: ViTEncoder(config, rngs=nnx.Rngs(0))))
    nnx.replace_by_pure_dict(state, nnx.restore_int_paths(jax.device_get(straight.params["encoder"])))
    trained = nnx.merge(graphdef, state)
    mel = jnp.asarray(next(dataset.as_dataset("train", batch_size=4).as_numpy_iterator())["mel"])
    np.testing.assert_array_equal(np.asarray(encoder.embed(mel)), np.asarray(trained.embed(mel)))
    assert not np.allclose(np.asarray(encoder.embed(mel)), np.asarray(encoder_0.embed(mel)))


# --------------------------------------------------------------------------- crash safety


def test_crashed_saves_are_never_listed_and_resume_skips_them(dataset, straight, tmp_path):
    root = tmp_path / "runs"
    run_dir = shutil.copytree(straight.run_dir, root / "crashed")
    (run_dir / "8" / COMMIT_MARKER).unlink()  # step 8's finalize never ran (Orbax commit-file mode)
    for leftover in ("8.orbax-checkpoint-tmp", "12.orbax-checkpoint-tmp", "16.orbax-checkpoint-tmp-3"):
        shutil.copytree(run_dir / "4", run_dir / leftover)  # saves caught in flight (with a marker, even)

    assert finalized_steps(run_dir) == [0, 4]
    assert [ref.key for ref in discover_checkpoints([root])] == ["crashed@0", "crashed@4"]
    with pytest.raises(CheckpointError, match="not a finalized checkpoint"):
        restore_encoder(run_dir, 8)

    resumed = train(BASE, dataset, run_dir, progress=False)
    assert (resumed.start_step, resumed.final_step) == (4, 8)  # from the last finalized step, not the crashed 8
    assert finalized_steps(run_dir) == [0, 4, 8] and (run_dir / "8" / COMMIT_MARKER).is_file()
    assert not (run_dir / "8.orbax-checkpoint-tmp").exists()  # Orbax replaced the stale in-flight folder
    assert_trees_equal(resumed.params, straight.params)
    assert resumed.history == straight.history
    assert_trees_equal(encoder_params(restore_encoder(run_dir, 8)[0]), straight.params["encoder"])


CRASH_SCRIPT = """
import json, os, sys
from pathlib import Path
from birdassets.datasets.mel_tfds import MelDataset
from birdassets.train import saver
from birdassets.train.config import TrainConfig
from birdassets.train.loop import train

dataset_root, config_json, run_dir, crash_step = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
original_save = saver.RunCheckpointer.save

def save_then_die(self, step, *args, **kwargs):
    original_save(self, step, *args, **kwargs)  # returns once the async write has started
    if step == crash_step:
        print(json.dumps(sorted(os.listdir(run_dir))), flush=True)
        os._exit(1)  # no close(), no finalize, no atexit: a hard crash

saver.RunCheckpointer.save = save_then_die
train(TrainConfig(**json.loads(config_json)), MelDataset(Path(dataset_root)), run_dir, progress=False)
"""


def run_script(tmp_path: Path, source: str, *args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", **(extra_env or {})}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300)


@pytest.mark.slow
def test_hard_crash_right_after_a_save_leaves_no_unfinished_step_listed(dataset, tmp_path):
    root = tmp_path / "runs"
    run_dir = root / "hard-crash"
    done = run_script(tmp_path, CRASH_SCRIPT, str(dataset.root), json.dumps(BASE.to_dict()), str(run_dir), "4")
    assert done.returncode == 1, done.stderr[-3000:]
    at_crash = json.loads(done.stdout.strip().splitlines()[-1])
    assert "0" in at_crash  # step 0 was finalized before step 4's save began

    finalized = finalized_steps(run_dir)
    assert finalized in ([0], [0, 4])  # step 4 is either whole or not listed
    assert [ref.step for ref in discover_checkpoints([root])] == finalized
    for name in step_dirs(run_dir):
        if name.isdigit():  # every step folder Orbax would list carries the commit marker
            assert (run_dir / name / COMMIT_MARKER).is_file(), f"{name} listed without commit marker"
        else:
            assert name == "4.orbax-checkpoint-tmp", name  # step 4 caught in flight
    assert read_metadata(run_dir, finalized[-1])["step"] == finalized[-1]


# --------------------------------------------------------------------------- data parallelism


DATA_PARALLEL_SCRIPT = """
import json, sys
from pathlib import Path
import jax
from birdassets.datasets.mel_tfds import MelDataset
from birdassets.train.config import TrainConfig
from birdassets.train.loop import train

dataset_root, config_json, run_dir = sys.argv[1], sys.argv[2], sys.argv[3]
placed = []
real_device_put = jax.device_put

def recording_device_put(x, *args, **kwargs):  # spy on the batches train() places (the real call still runs)
    result = real_device_put(x, *args, **kwargs)
    if isinstance(x, dict) and "mel" in x:
        placed.append([list(shard.data.shape) for shard in result["mel"].addressable_shards])
    return result

jax.device_put = recording_device_put
result = train(TrainConfig(**json.loads(config_json)), MelDataset(Path(dataset_root)), run_dir, progress=False)
print(json.dumps({
    "device_count": jax.device_count(),
    "history": result.history,
    "param_devices": sorted({len(leaf.sharding.device_set) for leaf in jax.tree.leaves(result.params)}),
    "batch_shards": placed,
    "params": {jax.tree_util.keystr(path): leaf.tolist()
               for path, leaf in jax.tree_util.tree_leaves_with_path(result.params)},
}))
"""


@pytest.mark.slow
def test_two_device_data_parallel_matches_one_device(dataset, straight, tmp_path):
    """The reference run again, its batch sharded over 2 (forced host) devices: same numbers up to rounding."""
    two_devices = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = run_script(tmp_path, DATA_PARALLEL_SCRIPT, str(dataset.root), json.dumps(BASE.replace(devices=2).to_dict()),
                      str(tmp_path / "two-devices"), extra_env=two_devices)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["device_count"] == 2
    assert report["param_devices"] == [2]  # parameters replicated over a 2-device mesh
    half = [BASE.batch_size // 2, *PRESET.input_shape]
    assert report["batch_shards"] == [[half, half]] * BASE.num_steps  # every batch split in halves, one per device

    assert [h["step"] for h in report["history"]] == [h["step"] for h in straight.history]
    for two, one in zip(report["history"][1:], straight.history[1:]):
        for name in ("loss", "probe_loss", "grad_norm"):
            assert two[name] == pytest.approx(one[name], rel=1e-4), (one["step"], name)
    # attention key biases get a gradient that is exactly 0 in exact arithmetic (softmax ignores a shift shared by
    # all keys), so Adam turns each run's rounding noise into steps of up to ~lr: bounded, not reproducible
    lr_sum = sum(h["lr"] for h in straight.history[1:])
    for key, value in leaves(straight.params).items():
        if "['key']['bias']" in key:
            assert np.max(np.abs(np.asarray(report["params"][key]) - value)) <= 2 * lr_sum, key
        else:
            np.testing.assert_allclose(report["params"][key], value, rtol=1e-4, atol=1e-6, err_msg=key)


# --------------------------------------------------------------------------- mixed precision


def test_bfloat16_computes_in_bf16_with_float32_master_weights(dataset, straight, tmp_path):
    config = BASE.replace(precision="bfloat16", num_steps=2, warmup_steps=1, checkpoint_every=2)
    result = train(config, dataset, tmp_path / "bf16", progress=False)
    assert {leaf.dtype for leaf in jax.tree.leaves(result.params)} == {jnp.dtype(jnp.float32)}
    encoder, _, _ = restore_encoder(tmp_path / "bf16", 2)
    assert {leaf.dtype for leaf in jax.tree.leaves(encoder_params(encoder))} == {jnp.dtype(jnp.float32)}

    values = [h[name] for h in result.history[1:] for name in ("loss", "probe_loss", "grad_norm")]
    assert len(values) == 6 and all(math.isfinite(v) for v in values)
    # step 1's losses are taken at the (identical) initial params on the same batch and mask: bf16 rounding only
    bf16, f32 = result.history[1], straight.history[1]
    for name in ("loss", "probe_loss"):
        assert bf16[name] == pytest.approx(f32[name], rel=0.05) and bf16[name] != f32[name]

    # and the rounding is that of weights *and* activations in bf16 (a bf16 input to a float32 model would land
    # within 1e-5 of the float32 loss): recompute step 1's forward pass all in bf16 (first batch of the stream,
    # mask of fold_in(seed, step 0)); the run lands next to it, far closer than to the float32 run
    batch = next(training_stream(dataset, ~holdout_mask(dataset), BASE.batch_size, BASE.seed, 0, BASE.shuffle_buffer))
    graphdef, state = nnx.split(TrainModel(encoder.config, "mae", len(dataset.classes()), rngs=nnx.Rngs(BASE.seed)))
    key = jax.random.fold_in(jax.random.PRNGKey(BASE.seed), 0)
    labels = jnp.asarray(batch["labels"])

    @jax.jit
    def first_losses_in_bf16(state, mel):
        model = nnx.merge(graphdef, jax.tree.map(lambda x: x.astype(jnp.bfloat16), state))
        objective, probe, _ = losses(model, "mae", mel.astype(jnp.bfloat16), labels, key, BASE.mask_ratio)
        return objective, probe

    for name, reference in zip(("loss", "probe_loss"), first_losses_in_bf16(state, jnp.asarray(batch["mel"]))):
        assert abs(bf16[name] - float(reference)) < abs(bf16[name] - f32[name]) / 4, name


# --------------------------------------------------------------------------- config


def test_config_from_toml_and_json_and_flag_overrides(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('objective = "supervised"\nnum_steps = 50\nwarmup_steps = 5\nlr = 3e-4\nprecision = "bfloat16"\n')
    from_toml = TrainConfig.from_file(toml)
    assert (from_toml.objective, from_toml.num_steps, from_toml.warmup_steps, from_toml.lr, from_toml.precision) == (
        "supervised", 50, 5, 3e-4, "bfloat16")
    assert from_toml.batch_size == TrainConfig().batch_size  # unset fields keep their defaults

    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps(from_toml.to_dict()))
    assert TrainConfig.from_file(as_json) == from_toml  # every field round-trips through JSON

    # flags override the file only when given (None = flag not given)
    flags = dict(objective=None, num_steps=80, lr=None, batch_size=16, max_checkpoints=None)
    merged = from_toml.replace(**flags)
    assert (merged.objective, merged.num_steps, merged.lr, merged.batch_size) == ("supervised", 80, 3e-4, 16)
    assert from_toml.num_steps == 50  # frozen: replace made a copy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('num_steps = 10\nlearning_rate = 0.1\n', r"unknown training settings \['learning_rate'\]"),
        ('objective = "contrastive"\n', "objective 'contrastive' is not one of"),
        ('precision = "float16"\n', "precision 'float16' is not one of"),
        ("warmup_steps = -1\n", "warmup_steps must be >= 0"),
        ("mask_ratio = 1.0\n", "mask_ratio must be within"),
        ("batch_size = 0\n", "batch_size must be >= 1"),
        ('lr = "fast"\n', "lr must be float, got 'fast'"),
        ("num_steps = 10.5\n", "num_steps must be int"),
        ("num_steps = [\n", "not valid toml"),
    ],
)
def test_bad_config_file_names_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TrainConfigError, match=message) as error:
        TrainConfig.from_file(path)
    assert str(error.value).startswith(str(path))


def test_invalid_values_raise_train_config_error():
    for bad in (dict(lr=0.0), dict(weight_decay=-0.1), dict(max_checkpoints=0), dict(seed=True), dict(devices="2")):
        with pytest.raises(TrainConfigError):
            TrainConfig(**bad)
    with pytest.raises(TrainConfigError, match="num_steps must be >= 1"):
        BASE.replace(num_steps=0)
    assert TrainConfig(lr=1, devices=2).lr == 1  # an int is a fine float


# --------------------------------------------------------------------------- optimizer


def test_weight_decay_applies_to_kernels_only():
    config = vit_config("tiny", frames=PRESET.frames, mels=PRESET.n_mels)
    abstract = nnx.eval_shape(lambda: TrainModel(config, "mae", 3, rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))  # {encoder, objective, probe}, shapes only
    mask = leaves(decay_mask(params))
    shapes = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(params)}
    names = {k: k.rsplit("['", 1)[-1].rstrip("']") for k in mask}
    assert set(names.values()) == {"kernel", "bias", "scale", "cls_token", "pos_embed", "mask_token"}
    assert {k for k, decays in mask.items() if decays} == {k for k in mask if names[k] == "kernel"}
    # attention biases are 2-D ([heads, head_dim]) and cls/pos embeddings 3-D, yet none of them decays
    assert any(names[k] == "bias" and len(shapes[k]) == 2 for k in mask)

    # the decay really follows the mask: with zero gradients AdamW only decays, by lr * weight_decay
    rng = np.random.default_rng(0)
    tree = {"dense": {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=3)},
            "attn": {"kernel": rng.normal(size=(4, 2, 2)), "bias": rng.normal(size=(2, 2))},
            "norm": {"scale": rng.normal(size=4)}, "cls_token": rng.normal(size=(1, 1, 4)),
            "pos_embed": rng.normal(size=(1, 5, 4)), "mask_token": rng.normal(size=4)}
    tree = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)
    tx = make_optimizer(lr=0.1, warmup_steps=0, total_steps=10, weight_decay=0.5, grad_clip=1.0)
    updates = jax.jit(lambda p: tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)[0])(tree)
    decays = {k: bool(v) for k, v in leaves(decay_mask(tree)).items()}
    assert [k for k, v in decays.items() if v] == ["['attn']['kernel']", "['dense']['kernel']"]
    for key, update in leaves(updates).items():
        expected = -0.1 * 0.5 * leaves(tree)[key] if decays[key] else np.zeros_like(update)
        np.testing.assert_allclose(update, expected, rtol=1e-6, atol=1e-9, err_msg=key)


def first_adam_moment(grads: dict, grad_clip: float) -> dict:
    """What AdamW receives after clipping, read from its first moment after one step: ``mu = (1 - b1) g``."""
    params = jax.tree.map(jnp.zeros_like, grads)
    tx = make_optimizer(lr=1e-3, warmup_steps=0, total_steps=10, weight_decay=0.0, grad_clip=grad_clip)
    _, state = tx.update(grads, tx.init(params), params)
    mu = optax.tree_utils.tree_get(state, "mu")
    return jax.tree.map(lambda m: np.asarray(m, np.float64) / 0.1, mu)  # optax's default b1 = 0.9


def test_large_gradients_are_clipped_to_the_configured_global_norm_small_ones_pass_unchanged():
    # w: 12 entries of 5 and b: 4 entries of 10 -> global norm sqrt(12 * 25 + 4 * 100) = sqrt(700) = 26.458
    big = {"w": jnp.full((3, 4), 5.0, jnp.float32), "b": jnp.full((4,), 10.0, jnp.float32)}
    seen = first_adam_moment(big, grad_clip=1.0)
    assert math.sqrt(sum(float(np.sum(v ** 2)) for v in seen.values())) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(seen["w"], np.full((3, 4), 5.0 / math.sqrt(700.0)), rtol=1e-5)  # direction kept
    np.testing.assert_allclose(seen["b"], np.full(4, 10.0 / math.sqrt(700.0)), rtol=1e-5)
    small = {"w": jnp.full((3, 4), 0.05, jnp.float32), "b": jnp.full((4,), 0.1, jnp.float32)}  # norm 0.26 < 1
    seen = first_adam_moment(small, grad_clip=1.0)
    np.testing.assert_allclose(seen["w"], np.full((3, 4), 0.05), rtol=1e-5)
    np.testing.assert_allclose(seen["b"], np.full(4, 0.1), rtol=1e-5)


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_zero():
    peak, warmup, total = 1e-3, 10, 110
    schedule = learning_rate_schedule(peak, warmup, total)

    def expected(step: int) -> float:
        if step < warmup:
            return peak * step / warmup
        progress = min(step - warmup, total - warmup) / (total - warmup)
        return peak * 0.5 * (1 + math.cos(math.pi * progress))

    for step in (0, 1, 5, 10, 35, 60, 85, 109, 110, 200):
        assert float(schedule(step)) == pytest.approx(expected(step), rel=1e-5, abs=peak * 1e-6), step
    assert float(schedule(60)) == pytest.approx(peak / 2)
    assert float(schedule(total)) == 0.0

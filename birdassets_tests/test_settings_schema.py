"""birdassets.toml is never misread silently: each wrong type, range, name or key is refused with one line naming
the file, the key and what was expected and found, through load_settings and through the real command line."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import birdassets.settings
from birdassets.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[1]
PROBES_LIST = "('linear', 'mlp', 'centroid', 'linear-asl')"

# (birdassets.toml, the message after "<file>: ")
REFUSED = [
    ('checkpoint_roots = "/tmp/abc"',
     'checkpoint_roots: expected a list of paths, got the string "/tmp/abc" (a list of one is written ["/tmp/abc"])'),
    ('probes = "linear"',
     'probes: expected a non-empty list of probes, got the string "linear" (a list of one is written ["linear"])'),
    ('include_demo = "no"', 'include_demo: expected true or false, got the string "no"'),
    ("include_demo = 0", "include_demo: expected true or false, got the integer 0"),
    ("n_folds = 0", "n_folds: expected an integer >= 2, got the integer 0"),
    ('n_folds = "five"', 'n_folds: expected an integer >= 2, got the string "five"'),
    ("n_folds = true", "n_folds: expected an integer >= 2, got the boolean true"),
    ("n_folds = 5.0", "n_folds: expected an integer >= 2, got the number 5.0"),
    ("fold_seed = -1", "fold_seed: expected an integer >= 0, got the integer -1"),
    ('probes = ["lin"]', f"probes[0]: unknown probe 'lin'; expected one of {PROBES_LIST} (did you mean 'linear'?)"),
    ("probes = []", "probes: expected a non-empty list of probes, got a list of 0 items"),
    ('probes = ["mlp", "mlp"]', "probes: 'mlp' listed more than once"),
    ('pretrained = "birdnet-v2.4"', 'pretrained: expected a list of pretrained encoders, got the string "birdnet-v2.4" '
                                    '(a list of one is written ["birdnet-v2.4"])'),
    ('checkpoint_roots = ["runs"]', 'checkpoint_roots[0]: expected an absolute path (a string, ~ allowed), got the '
                                    'string "runs" (a relative path would depend on the working folder)'),
    ('checkpoint_root = ["/x"]', "checkpoint_root: unknown key (did you mean 'checkpoint_roots'?); known keys: "
                                 "include_demo, checkpoint_roots, probes, pretrained, n_folds, fold_seed, executor, "
                                 "max_concurrent_steps, celery_broker, celery_backend, datasets, presets"),
    ('executor = "dask"', "executor: unknown executor 'dask'; expected one of ('in_process', 'multiprocess', "
                          "'celery')"),
    ('celery_broker = "localhost"', "celery_broker and celery_backend must be URLs such as "
                                    "'pyamqp://guest@localhost:5672//' and 'rpc://'"),
    ('[datasets]\nname = "x"', "datasets: expected an array of tables, got a table"),
    ('[[datasets]]\nname = "x"\nsource = "folders"\nroot = "/x"\nbenchmark = "no"',
     "datasets[0].source: unknown source 'folders'; expected one of ('demo', 'birdclef', 'birdset', 'folder', "
     "'clips', 'raven') "
     "(did you mean 'folder'?); datasets[0].benchmark: expected true or false, got the string \"no\""),
    ('[[datasets]]\nname = "a b"\nsource = "folder"\nroot = 3',
     'datasets[0].root: expected an absolute path (a string, ~ allowed), got the integer 3; '
     "datasets[0].name: expected letters, digits, '-', '_' or '.' (not first), got the string \"a b\""),
    ('[[datasets]]\nname = "x"\nsource = "folder"\nroot = "/x"\nn_folds = 3',
     "datasets[0].n_folds: unknown key; known keys: name, source, root, preset, birdset_config, benchmark, label_column, "
     "min_overlap_s, min_overlap_fraction"),
    ("[presets]\nmine = 3", "presets.mine: expected a table, got the integer 3"),
]


def case_id(case) -> str:
    return re.sub(r"\s+", " ", case[0])[:40]


@pytest.mark.parametrize("text, message", REFUSED, ids=[case_id(case) for case in REFUSED])
def test_a_wrong_setting_is_refused_naming_the_file_key_expected_and_found(tmp_path, text, message):
    config = tmp_path / "birdassets.toml"
    config.write_text(text + "\n")
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path)
    assert str(info.value) == f"{config}: {message}"


def test_a_valid_file_is_read_as_written(tmp_path):
    home = Path.home()
    (tmp_path / "birdassets.toml").write_text(
        'include_demo = false\ncheckpoint_roots = ["~/runs", "/data/runs"]\nprobes = ["linear-asl"]\n'
        "pretrained = []\nn_folds = 3\nfold_seed = 0\n"
        '[[datasets]]\nname = "hsn"\nsource = "birdset"\nroot = "/data/hsn"\nbenchmark = false\n'
    )
    settings = load_settings(tmp_path)
    assert settings.checkpoint_roots == (tmp_path / "checkpoints", home / "runs", Path("/data/runs"))
    assert (settings.probes, settings.pretrained, settings.n_folds, settings.fold_seed) == (("linear-asl",), (), 3, 0)
    assert settings.task_names == () and settings.dataset("hsn").benchmark is False


@pytest.mark.parametrize("text, where", [
    ("include_demo = [\n", "Invalid value (at end of document, line 2, column 1)"),
    ("n_folds = 3\nn_folds = 4\n", "Cannot overwrite a value (at line 2, column 12)"),
    ("include_demo = tru\n", "Invalid value (at line 1, column 16)"),
], ids=["end-of-document", "key-twice", "bad-value"])
def test_broken_toml_is_one_error_naming_the_file_line_and_column_without_a_chained_traceback(tmp_path, text, where):
    """Dagster prints a code location's load error with its whole chain (``traceback.TracebackException``): the
    chain must hold our one error, not tomllib's parser frames."""
    config = tmp_path / "birdassets.toml"
    config.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path)
    assert str(info.value) == f"{config}: not valid TOML: {where}"
    shown = "".join(traceback.format_exception(info.value))
    assert "tomllib" not in shown and "TOMLDecodeError" not in shown and "caused" not in shown, shown


def test_a_settings_file_that_is_not_utf8_or_not_a_file_is_one_error(tmp_path):
    config = tmp_path / "birdassets.toml"
    config.write_bytes(b"include_demo = \xff\n")
    with pytest.raises(SettingsError, match=re.escape(f"{config}: not valid TOML: not UTF-8 text (byte 15)")):
        load_settings(tmp_path)
    config.unlink()
    config.mkdir()
    with pytest.raises(SettingsError, match=re.escape(f"{config}: cannot read the settings (Is a directory)")):
        load_settings(tmp_path)


# ---- the real command line: one line on stderr, exit status 2, no traceback ----------------------------------------
CLI_CASES = [
    (b'checkpoint_roots = "/tmp/abc"',
     'checkpoint_roots: expected a list of paths, got the string "/tmp/abc" (a list of one is written ["/tmp/abc"])'),
    (b'probes = "linear"',
     'probes: expected a non-empty list of probes, got the string "linear" (a list of one is written ["linear"])'),
    (b'include_demo = "no"', 'include_demo: expected true or false, got the string "no"'),
    (b"n_folds = 0", "n_folds: expected an integer >= 2, got the integer 0"),
    (b'[datasets]\nname = "x"', "datasets: expected an array of tables, got a table"),
    (b"include_demo = \xff", "not valid TOML: not UTF-8 text (byte 15)"),
    (b"include_demo = [", "not valid TOML: Invalid value (at end of document, line 2, column 1)"),
]


def cli_case_id(case) -> str:
    return case_id((case[0].decode(errors="replace"),))


@pytest.fixture(scope="module")
def cli_outcomes(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """``birdassets query "select 1"`` under a home holding each case's birdassets.toml, two at a time."""
    def run(case) -> tuple[Path, subprocess.CompletedProcess]:
        home = tmp_path_factory.mktemp("home")
        (home / "birdassets.toml").write_bytes(case[0] + b"\n")
        env = {**os.environ, "BIRDASSETS_HOME": str(home)}
        done = subprocess.run([sys.executable, "-m", "birdassets.cli", "query", "select 1"], env=env, cwd=home,
                              capture_output=True, text=True, timeout=300)
        return home / "birdassets.toml", done

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(map(cli_case_id, CLI_CASES), pool.map(run, CLI_CASES), strict=True))


@pytest.mark.parametrize("case", CLI_CASES, ids=[cli_case_id(case) for case in CLI_CASES])
def test_the_command_line_says_one_line_naming_the_file_and_key_and_exits_2(cli_outcomes, case):
    config, done = cli_outcomes[cli_case_id(case)]
    assert done.stderr.splitlines() == [f"birdassets query: {config}: {case[1]}"], done.stderr[-3000:]
    assert done.returncode == 2 and done.stdout == ""


# ---- one declaration: the schema, the probes, the documentation ----------------------------------------------------
def probes_module_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``PROBES``' keys and ``DEFAULT_PROBES`` as written in birdassets/probes.py (read, not imported: JAX)."""
    tree = ast.parse((REPO / "birdassets" / "probes.py").read_text())
    values = {node.target.id: node.value for node in tree.body
              if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    keys = tuple(ast.literal_eval(key) for key in values["PROBES"].keys)
    return keys, ast.literal_eval(values["DEFAULT_PROBES"])


def test_the_known_probes_are_the_probes_module_s():
    from birdassets.toml_schema import DEFAULT_PROBES, KNOWN_PROBES

    assert (KNOWN_PROBES, DEFAULT_PROBES) == probes_module_names()


def test_the_readme_shows_the_schema_s_table():
    from birdassets.toml_schema import settings_reference

    assert "| `n_folds` | an integer >= 2 | `5` |" in settings_reference()
    assert settings_reference() in (REPO / "README.md").read_text()


def test_the_readme_and_docstring_examples_are_valid_settings(tmp_path):
    readme = (REPO / "README.md").read_text()
    example = readme.split("Write `$BIRDASSETS_HOME/birdassets.toml`:\n\n```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "birdassets.toml").write_text(example)
    from_readme = load_settings(tmp_path)
    assert from_readme.task_names == ("demo-clear", "demo-noisy", "birdclef-2025", "hsn", "dawn-chorus")
    rule = from_readme.dataset("dawn-chorus").label_rule
    assert (rule.label_column, rule.min_overlap_s, rule.min_overlap_fraction) == ("Annotation", 0.5, 0.5)
    clips = from_readme.dataset("orca-clips")
    assert (clips.source, clips.preset, clips.benchmark) == ("clips", "orcahello", False)  # the source's preset
    (tmp_path / "birdassets.toml").write_text(literal_block(birdassets.settings.__doc__, "example::"))
    settings = load_settings(tmp_path)
    assert settings.dataset("birdclef-2025").root == Path("/data/birdclef-2025")
    assert settings.preset("birdset-hop256").hop_length == 256 and settings.n_folds == 5


def literal_block(docstring: str, heading: str) -> str:
    """The indented block after ``heading`` in a docstring, unindented."""
    block = []
    for line in docstring.split(heading, 1)[1].splitlines()[2:]:  # after the heading's line and a blank one
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block)

"""The pages agree with the code and with each other (issue 23, item 4).

Each test checks a class of contradiction, not one instance: every recipe
honours KF_EXPERIMENTS; every `${env:KF_DATA}` use means the data root;
every file a page promises under an experiment folder is one the code
writes there; every config key a page or a message names is one the schema
accepts; no page promises a dry run "in a minute"; BENCHMARKS.md names the
machine of its GPU section. Each checker is also fed a known-bad input, so
it is shown to fail. Nothing here trains or builds a model.
"""

import ast
import os
import re
from pathlib import Path

import pytest

from klassterfork.config import options as opts
from klassterfork.config.loader import load
from klassterfork.data.reading import bad_records
from klassterfork.data.spec import EvalData, TrainData
from klassterfork.training.builders import TRAIN_LOOP_DEFAULTS
from klassterfork.training.optimizers import OPTIMIZERS
from klassterfork.training.trainer import stage_dirs

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "runs" / "action" / "classification").glob("*.hjson"))
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
CLUSTER_FILES = sorted((ROOT / "docs" / "cluster").glob("*"))
CODE = sorted((ROOT / "klassterfork").rglob("*.py"))


def rel(path):
    return Path(path).relative_to(ROOT).as_posix()


def load_recipe(path, monkeypatch, **env):
    for name in ("KF_DATA", "KF_EXPERIMENTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stages, _ = load(str(path))
    return stages


# --- KF_EXPERIMENTS ---


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_writes_under_KF_EXPERIMENTS(recipe, monkeypatch, tmp_path):
    for stage in load_recipe(recipe, monkeypatch, KF_EXPERIMENTS=str(tmp_path / "exp")):
        meta = stage.get("meta", {})
        assert meta.get("experiment_dir") == str(tmp_path / "exp" / meta["name"]), (
            f"{rel(recipe)}: meta.experiment_dir must be "
            f"${{env:KF_EXPERIMENTS:-experiments}}/{meta.get('name')}. Received: "
            f"{meta.get('experiment_dir')!r}"
        )
    for stage in load_recipe(recipe, monkeypatch):  # unset: the documented default
        meta = stage["meta"]
        assert meta["experiment_dir"] == f"experiments/{meta['name']}"


# --- KF_DATA: the data root (`<root>/records/<dataset>`, `<root>/embeddings/`) ---

KF_DATA_USE = re.compile(r"\$\{env:KF_DATA(?::-([^}]*))?\}(\S*)")
KF_DATA_SET = re.compile(r"\bKF_DATA=(\S+)")


def kf_data_misuses(text):
    """`${env:KF_DATA}` uses that do not compose `<root>/records/...`, and
    `KF_DATA=` assignments naming a records folder instead of the root."""
    bad = []
    for default, rest in KF_DATA_USE.findall(text):
        if not re.match(r"/(records|embeddings)(/|$)", rest) or default.rstrip(
            "/"
        ).endswith("records"):
            bad.append(f"${{env:KF_DATA:-{default}}}{rest}")
    bad += [
        f"KF_DATA={value}"
        for value in KF_DATA_SET.findall(text)
        if value.rstrip("/").endswith("records")
    ]
    return bad


def test_kf_data_checker_catches_a_records_folder():
    assert kf_data_misuses("dir: ${env:KF_DATA:-demo_data/records}")
    assert kf_data_misuses("dir: ${env:KF_DATA:-records}")
    assert kf_data_misuses("KF_DATA=demo_data/records python runs/train.py x.hjson")
    assert not kf_data_misuses(
        "dir: ${env:KF_DATA:-data}/records/ssv2_256\nKF_DATA=data"
    )


def test_every_kf_data_use_means_the_data_root():
    files = RECIPES + PAGES + CLUSTER_FILES + [ROOT / "Makefile"]
    bad = {rel(p): kf_data_misuses(p.read_text(encoding="utf-8")) for p in files}
    bad = {path: uses for path, uses in bad.items() if uses}
    assert not bad, (
        f"KF_DATA is the data root (recipes read <root>/records/<dataset>): {bad}"
    )


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_reads_records_under_KF_DATA(recipe, monkeypatch, tmp_path):
    for stage in load_recipe(recipe, monkeypatch, KF_DATA=str(tmp_path)):
        for key, block in stage["datasets"].items():
            assert re.match(
                rf"{re.escape(str(tmp_path))}/records(/|$)", block["dir"]
            ), (rel(recipe), key, block["dir"])


# --- files a page promises are files the code writes ---


def recipe_outputs(monkeypatch):
    """{experiment folder name: (stage count, eval dataset keys)} of the recipes."""
    out = {}
    for recipe in RECIPES:
        stages = load_recipe(recipe, monkeypatch)
        keys = {k for stage in stages for k in stage["datasets"] if k != "train"}
        out[os.path.basename(stages[0]["meta"]["experiment_dir"])] = (len(stages), keys)
    return out


def experiment_root_files():
    """String constants naming a file written at the experiment folder's root."""
    tree = ast.parse((ROOT / "klassterfork/training/experiment.py").read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"[\w.]+\.json", node.value)
    }


# What a stage folder holds: the trainer's `stage_dirs`, `-e`'s metrics, the
# bad-record list; predictions_<key> are checked against the eval sets.
STAGE_FILES = {os.path.basename(p) for p in stage_dirs("E", 0).values()} | {
    "eval_metrics.json",
    bad_records.FILE_NAME,
}
EXPERIMENT_PATH = re.compile(
    r"experiments/([\w<>]+)/((?:stage(\d+|<\w+>)/)?[\w<>{}.*-]+)"
)


def promised_path_errors(text, outputs, page_recipe=None):
    """`experiments/NAME/[stageN/]FILE` mentions that no recipe run writes."""
    bad = []
    for name, path, stage in EXPERIMENT_PATH.findall(text):
        file = path.split("/")[-1]
        placeholder = name == "X" or name.startswith("<")
        if name not in outputs and not placeholder:
            bad.append(f"{name}: no recipe writes experiments/{name}")
            continue
        num_stages, keys = outputs.get(name, (None, None))
        if not stage:
            if file not in experiment_root_files():
                bad.append(f"experiments/{name}/{path}: not written there")
            continue
        if num_stages is not None and stage.isdigit() and int(stage) >= num_stages:
            bad.append(
                f"experiments/{name}/{path}: the recipe has {num_stages} stage(s)"
            )
        if file.startswith("predictions_"):
            key = re.sub(r"\.(npz|json)$", "", file)[len("predictions_") :]
            if keys is not None and key not in keys:
                bad.append(f"experiments/{name}/{path}: eval sets are {sorted(keys)}")
        elif file not in STAGE_FILES:
            bad.append(
                f"experiments/{name}/{path}: a stage folder holds {sorted(STAGE_FILES)}"
            )
    return bad


PREDICTIONS = re.compile(r"predictions_([\w<>]+?)\.(?:npz|json)")


def predictions_errors(text, keys):
    """`predictions_KEY.npz/.json` with KEY not an eval set of the recipe."""
    return [
        f"predictions_{key}: eval sets are {sorted(keys)}"
        for key in PREDICTIONS.findall(text)
        if key not in keys | {"<key>"}
    ]


def test_promised_file_checkers_catch_wrong_names(monkeypatch):
    outputs = recipe_outputs(monkeypatch)
    assert promised_path_errors(
        "experiments/author_wo_sun_ucf101/stage0/predictions_val.npz", outputs
    )
    assert promised_path_errors("experiments/X/stage0/config.resolved.json", outputs)
    assert promised_path_errors("experiments/X/stage0/train_log.csv", outputs)
    assert promised_path_errors(
        "experiments/tsm_r50_ssv2_8f/stage1/model.keras", outputs
    )
    assert promised_path_errors(
        "experiments/no_such_recipe/config.resolved.json", outputs
    )
    assert predictions_errors(
        "writes `stage0/predictions_val.npz/.json`", {"val_ucf101"}
    )
    assert not promised_path_errors(
        "experiments/X/config.resolved.json experiments/X/stage0/log.csv "
        "experiments/author_wo_sun_hmdb51/stage0/predictions_val_hmdb51.npz",
        outputs,
    )


def test_every_promised_run_file_is_one_the_code_writes(monkeypatch):
    outputs = recipe_outputs(monkeypatch)
    bad = {}
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        errors = promised_path_errors(text, outputs)
        recipe = ROOT / "runs/action/classification" / f"{page.stem}.hjson"
        if page.parent.name == "recipes" and recipe.exists():
            stages = load_recipe(recipe, monkeypatch)
            keys = {k for stage in stages for k in stage["datasets"] if k != "train"}
            errors += predictions_errors(text.replace("experiments/", "\n"), keys)
        if errors:
            bad[rel(page)] = errors
    assert not bad, bad


def test_config_resolved_json_is_written_where_pages_say():
    # Pages say the experiment folder (README, docs/recipes/common.md); the
    # readers look there (`inference.resolved_config`: ../config.resolved.json).
    assert "config.resolved.json" in experiment_root_files()
    for page in (ROOT / "README.md", ROOT / "docs/recipes/common.md"):
        text = " ".join(page.read_text(encoding="utf-8").split())
        assert "`config.resolved.json` there" in text, rel(page)


# --- config keys named by pages and messages ---

DATASET_KEY = re.compile(r"\bdatasets\.(\w+)\.(\w+)")
LOOP_KEY = re.compile(r"\btrain_loop\.(\w+)")
OPTIMIZER_KEY = re.compile(r"\boptimizer\.(\w+|<[^>]*>)\.(\w+)")


def unknown_keys(text):
    """Dotted config keys in `text` that the schema does not accept."""
    bad = []
    for role, key in DATASET_KEY.findall(text):
        spec = TrainData if role == "train" else EvalData
        if key not in opts.accepted(spec):
            bad.append(f"datasets.{role}.{key}")
    bad += [
        f"train_loop.{key}"
        for key in LOOP_KEY.findall(text)
        if key not in TRAIN_LOOP_DEFAULTS
    ]
    for name, key in OPTIMIZER_KEY.findall(text):
        names = OPTIMIZERS.names() if name.startswith("<") else [name]
        if any(
            n not in OPTIMIZERS or key not in OPTIMIZERS.accepted_args(n) for n in names
        ):
            bad.append(f"optimizer.{name}.{key}")
    return bad


def code_strings(path):
    """Every string literal of a module, f-strings' literal parts included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_key_checker_catches_unknown_keys():
    assert unknown_keys("enable train_loop.global_clipnorm") == [
        "train_loop.global_clipnorm"
    ]
    assert unknown_keys("datasets.val.flip, datasets.train.num_clips") == [
        "datasets.val.flip",
        "datasets.train.num_clips",
    ]
    assert unknown_keys("optimizer.SGD.clipnorms optimizer.Lion.global_clipnorm")
    assert not unknown_keys(
        "optimizer.<Name>.global_clipnorm, optimizer.AdamW.global_clipnorm "
        "datasets.val_ucf101.num_clips datasets.train.flip train_loop.epochs"
    )


def test_pages_name_only_accepted_config_keys():
    bad = {rel(p): unknown_keys(p.read_text(encoding="utf-8")) for p in PAGES}
    bad = {page: keys for page, keys in bad.items() if keys}
    assert not bad, bad


# Messages known to name a key that is not one (none: the diverged message
# named `train_loop.global_clipnorm`; the key is optimizer.<Name>.global_clipnorm).
PENDING = set()


def code_unknown_keys():
    return {
        (rel(path), key)
        for path in CODE
        for text in code_strings(path)
        for key in unknown_keys(text)
    }


def test_messages_name_only_accepted_config_keys():
    bad = code_unknown_keys() - PENDING
    assert not bad, sorted(bad)


def test_diverged_message_names_the_real_clip_key():
    text = (ROOT / "klassterfork/training/hooks.py").read_text(encoding="utf-8")
    assert "optimizer.<Name>.global_clipnorm" in text
    assert "train_loop.global_clipnorm" not in text


def test_readme_dataset_keys_are_spec_options_listed_in_options_md():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    options_md = (ROOT / "docs/options.md").read_text(encoding="utf-8")
    intro = (
        readme[: readme.index("| key | where | what |")].rstrip().rsplit("\n\n", 1)[-1]
    )
    assert "docs/options.md" in intro, intro
    rows = re.findall(r"^\| (.*?) \| (train|val)[^|]* \|", readme, flags=re.M)
    assert len(rows) > 5
    for cells, role in rows:
        spec = TrainData if role == "train" else EvalData
        for name in re.findall(r"`(\w+)", re.sub(r"\([^)]*\)", "", cells)):
            assert name in opts.accepted(spec), (name, role)
    for spec in (TrainData, EvalData):
        missing = [n for n in opts.accepted(spec) if f"`{n}`" not in options_md]
        assert not missing, f"docs/options.md does not list {missing}"


# --- measured claims ---


def test_no_page_promises_a_dry_run_in_a_minute():
    bad = [
        rel(p)
        for p in PAGES + [ROOT / "BENCHMARKS.md"]
        if re.search(r"in (a|one) minute", p.read_text(encoding="utf-8"), flags=re.I)
    ]
    assert not bad, bad


def benchmarks_section(title):
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_dry_run_figures_are_the_measured_ones(recipe):
    page = (ROOT / "docs/recipes" / f"{recipe.stem}.md").read_text(encoding="utf-8")
    sentence = " ".join(page[: page.index("--dry-run")].rsplit("\n\n", 2)[-2].split())
    measured = " ".join(benchmarks_section("Test suite").split())
    figures = re.findall(r"(\d+(?:\.\d+)? (?:s|GB))\b", sentence)
    assert figures and "BENCHMARKS.md" in sentence, sentence
    numbers = set(re.findall(r"\d+(?:\.\d+)?", measured))  # "2.9 / 2.8 GB 31 s" groups
    for figure in figures:
        assert figure.split()[0] in numbers, (figure, sentence)


def test_benchmarks_name_the_machine_of_every_section():
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    intro = text[: text.index("\n## ")]
    gpus = set(re.findall(r"NVIDIA (H100|H200|A100)", text[len(intro) :]))
    assert not re.search(r"every figure[^.]*CPU", intro), (
        "the intro says every figure is CPU"
    )
    for gpu in gpus:
        assert gpu in intro, f"the intro does not name the {gpu} section's machine"

"""The user guide is executed: every shell block of docs/ and README.md.

Each fenced shell block (no language, bash, sh, shell, console) must carry a
marker on the line before it:

    <!-- needs: real dataset -->           (or another reason: real weights, ...)
    <!-- run: fast -->                     run here in the default test run
    <!-- run: slow, setup: NAME -->        run in the slow run, after SETUPS[NAME]

Every block, run or not, has its commands checked without running them: a
`kf-*` command, `python runs/train.py` or `python tools/X.py` line is parsed
by that command's real argparse parser (imported without TensorFlow, as
`--help` is), so a renamed command or flag fails here; a bare recipe name
must exist under runs/, and a `make` target in the Makefile. Blocks that run
do so in a fresh folder (with `runs/` and `tools/` linked in) on stand-in
data: the shared annotation files with synthetic videos under their names, a
real SSv2 clip, or generated synthetic videos. Python blocks run when marked.
"""

import argparse
import ast
import contextlib
import importlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DOCS = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
SHELL = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*(needs|run):\s*(.*?)\s*-->\s*$")
VENV_BIN = Path(sys.executable).parent


def read_blocks(path):
    """[(path, line, lang, text, marker)] of the fenced blocks of one file;
    marker is (kind, options dict) from the line before the fence, or None."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, lang = i, match.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before.strip())
        if marker:
            kind, rest = marker.groups()
            options = {"reason": rest} if kind == "needs" else dict(
                [("speed", rest.split(",")[0].strip())]
                + [tuple(p.strip() for p in part.split(":", 1))
                   for part in rest.split(",")[1:] if ":" in part])
            marker = (kind, options)
        out.append((path, start + 1, lang, "\n".join(lines[start + 1:end]), marker))
        i = end + 1
    return out


BLOCKS = [b for path in DOCS for b in read_blocks(path)]
SHELL_BLOCKS = [b for b in BLOCKS if b[2] in SHELL]


def block_id(block):
    return f"{block[0].relative_to(ROOT)}:{block[1]}"


def test_the_guide_has_the_pages_the_issue_asks_for():
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in DOCS if "docs" in p.parts}
    for name in ("ssv2", "kinetics", "ucf101", "hmdb51", "frames", "csv"):
        assert f"datasets/{name}.md" in pages
    for recipe in sorted((ROOT / "runs" / "action" / "classification").glob("*.hjson")):
        assert f"recipes/{recipe.stem}.md" in pages, recipe.name
    assert {"README.md", "reuse.md", "long_runs_and_clusters.md"} <= pages
    assert len(SHELL_BLOCKS) > 40


def test_every_shell_block_is_run_or_marked():
    unmarked = [block_id(b) for b in SHELL_BLOCKS if b[4] is None]
    assert not unmarked, (
        "shell blocks without a `<!-- run: fast|slow -->` or `<!-- needs: ... -->` "
        f"marker on the line before: {unmarked}")
    for block in BLOCKS:
        if block[4] and block[4][0] == "run":
            options = block[4][1]
            assert options["speed"] in ("fast", "slow"), block_id(block)
            assert options.get("setup") in (None, *SETUPS), block_id(block)


# --- commands and flags --------------------------------------------------------------

def console_scripts():
    """{command: (module, function)} from setup.py's entry points."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            return {s.split("=")[0].strip(): tuple(s.split("=")[1].strip().split(":"))
                    for s in scripts}
    raise AssertionError("setup.py has no entry_points")


SCRIPTS = console_scripts()


def tool_module(script):
    """`tools/X.py` -> the `klassterfork.cli` module its shim calls."""
    text = (ROOT / script).read_text()
    match = re.search(r"from (klassterfork\.cli\.\w+) import main", text)
    assert match, f"{script} does not call a klassterfork.cli main"
    return match.group(1), "main"


def commands(text):
    """The command lines of a shell block, as token lists (env assignments,
    comments, heredoc-free shell control words stripped)."""
    text = text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens, current = list(lexer), []
        for token in tokens + [";"]:
            if token in (";", "&&", "||", "|", "&"):
                while current and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", current[0]):
                    current.pop(0)
                if current and current[0] in ("do", "then"):
                    current.pop(0)
                if current:
                    out.append(current)
                current = []
            else:
                current.append(token)
    return out


class Parsed(Exception):
    pass


def check_command(tokens):
    """Parses one command line with its real parser; returns what was checked
    (None for commands this test does not know, e.g. printf)."""
    if tokens[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        for target in tokens[1:]:
            assert target in targets, f"make {target}: no such Makefile target"
        return "make"
    if tokens[0] in SCRIPTS:
        module, function = SCRIPTS[tokens[0]]
        argv = tokens[1:]
    elif tokens[0] == "python" and len(tokens) > 1 and tokens[1] == "runs/train.py":
        module, function = SCRIPTS["kf-train"]
        argv = tokens[2:]
    elif tokens[0] == "python" and len(tokens) > 1 and tokens[1].startswith("tools/"):
        module, function = tool_module(tokens[1])
        argv = tokens[2:]
    elif tokens[0].startswith("kf-"):
        raise AssertionError(f"{tokens[0]}: no such console script in setup.py")
    else:
        return None
    main = getattr(importlib.import_module(module), function)
    seen = {}

    def catch_parser(self, args=None, namespace=None):
        seen["parser"] = self
        raise Parsed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", catch_parser)
        try:
            main(argv)
        except Parsed:
            pass
    assert "parser" in seen, f"{' '.join(tokens)}: the command never parsed its arguments"
    parser = seen["parser"]
    # Flags spelled in full (argparse would accept a prefix of a renamed flag).
    value_next = False
    for token in argv:
        flag = token.split("=", 1)[0]
        if value_next or not flag.startswith("-") or re.fullmatch(r"-\d.*", flag):
            value_next = False  # an option's value, a positional or a number
            continue
        assert flag in parser._option_string_actions, (
            f"{' '.join(tokens)}: {flag} is not an option of {parser.prog}")
        action = parser._option_string_actions[flag]
        value_next = "=" not in token and action.nargs != 0
    stderr = io.StringIO()
    if "..." not in argv:  # "..." elides required arguments in some examples
        with contextlib.redirect_stderr(stderr):
            try:
                seen["args"] = parser.parse_args(argv)
            except SystemExit as exit:
                raise AssertionError(f"{' '.join(tokens)}\n  -> exit {exit.code}: "
                                     f"{stderr.getvalue().strip()}") from None
    else:
        seen["args"] = None
    config = getattr(seen["args"], "config", None) if seen["args"] else None
    placeholder = config and Path(config).stem.isupper()  # CONFIG.hjson in the README
    if module.endswith("cli.train") and config and "/" not in config and not placeholder:
        assert list((ROOT / "runs").rglob(config)), f"{config}: no such recipe under runs/"
    return module


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=block_id)
def test_documented_commands_and_flags_exist(block):
    for tokens in commands(block[3]):
        check_command(tokens)


def test_flag_check_catches_a_renamed_flag_and_command():
    # The check above can fail: an unknown flag, a missing recipe, a missing
    # command, a missing make target.
    checked = check_command(["kf-convert", "--csv", "a.csv", "--out", "r", "--workers", "2"])
    assert checked == "klassterfork.cli.convert"
    with pytest.raises(AssertionError, match="--short-sid is not an option of kf-convert"):
        check_command(["kf-convert", "--csv", "a.csv", "--out", "r", "--short-sid", "1"])
    with pytest.raises(AssertionError, match="required: --out"):
        check_command(["kf-convert", "--csv", "a.csv"])
    with pytest.raises(AssertionError, match="invalid choice"):
        check_command(["kf-convert", "--csv", "a.csv", "--out", "r", "--runner", "spark"])
    with pytest.raises(AssertionError, match="no such recipe"):
        check_command(["python", "runs/train.py", "no_such_recipe.hjson"])
    with pytest.raises(AssertionError, match="no such console script"):
        check_command(["kf-convertt", "--csv", "a.csv"])
    with pytest.raises(AssertionError, match="no such Makefile target"):
        check_command(["make", "demoo"])
    assert commands("A=1 kf-x --a 1 \\\n  --b 'c d' | head # note\nfor s in a b; do\n"
                    "  kf-y $s\ndone") == [["kf-x", "--a", "1", "--b", "c d"], ["head"],
                                          ["for", "s", "in", "a", "b"], ["kf-y", "$s"],
                                          ["done"]]


# --- stand-in data for the blocks that run ----------------------------------------

def need_shared(*parts):
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not found: {path}")
    return path


def stand_in_video(path, seed):
    """A short synthetic H.264 clip (a sliding square) at `path`."""
    import numpy as np

    from klassterfork.data.conversion.synthetic import write_video

    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 80, size=(12, 48, 64, 3), dtype=np.uint8)
    for t in range(12):
        frames[t, 16:32, 2 + 4 * t:18 + 4 * t] = 220
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(str(path), frames, fps=12)


def setup_ssv2_sample(work):
    ann = work / "data" / "ssv2" / "annotations"
    ann.mkdir(parents=True)
    src = need_shared("annotations", "ssv2")
    shutil.copy(src / "something-something-v2-labels.json", ann)
    shutil.copy(src / "augmentation_mappings.json", ann)
    shutil.copy(src / "something-something-v2-validation.sample.json",
                ann / "something-something-v2-validation.json")
    (work / "data" / "ssv2" / "videos").mkdir()
    shutil.copy(need_shared("videos", "ssv2", "166766.webm"),
                work / "data" / "ssv2" / "videos")


def setup_kinetics_sample(work):
    ann = work / "data" / "kinetics400" / "annotations"
    ann.mkdir(parents=True)
    csv = need_shared("annotations", "kinetics", "kinetics-400_val.csv")
    shutil.copy(csv, ann)
    shutil.copy(need_shared("annotations", "kinetics", "label_map_k400.txt"), ann)
    for i, line in enumerate(csv.read_text().splitlines()[1:3]):
        label, youtube_id, start, end = line.split(",")[:4]
        name = f"{youtube_id}_{int(start):06d}_{int(end):06d}.mp4"
        stand_in_video(work / "data" / "kinetics400" / "videos" / "val" / name, i)


def setup_ucf101_sample(work):
    lists = work / "data" / "ucf101" / "ucfTrainTestlist"
    shutil.copytree(need_shared("annotations", "ucf101", "ucfTrainTestlist"), lists)
    for i, line in enumerate((lists / "trainlist01.txt").read_text().splitlines()[:2]):
        stand_in_video(work / "data" / "ucf101" / "UCF-101" / line.split()[0], i)


def setup_hmdb51_sample(work):
    splits = work / "data" / "hmdb51" / "testTrainMulti_7030_splits"
    shutil.copytree(need_shared("annotations", "hmdb51", "testTrainMulti_7030_splits"), splits)
    first = sorted(splits.glob("*_test_split1.txt"))[0]
    label = first.name.rsplit("_test_split", 1)[0]
    train = [ln.split()[0] for ln in first.read_text().splitlines() if ln.split()[1:] == ["1"]]
    for i, name in enumerate(train[:2]):
        stand_in_video(work / "data" / "hmdb51" / "videos" / label / name, i)


def setup_frames_sample(work):
    (work / "data" / "frames" / "rawframes").mkdir(parents=True)
    os.symlink(need_shared("frames", "mmaction2_imgs"),
               work / "data" / "frames" / "rawframes" / "imgs")


def setup_tiny_records(work):
    from tests.training.tiny_data import write_split

    write_split(str(work / "records"), "train", 16, seed=0)
    write_split(str(work / "records"), "validation", 8, seed=1)


def run_block_in(work, text, lang):
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if lang == "python":
        argv = [sys.executable, "-c", text]
    else:
        argv = ["bash", "-e", "-c", text]
    proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{text}\n--- stdout\n{proc.stdout[-3000:]}\n"
        f"--- stderr\n{proc.stderr[-3000:]}")
    return proc


def demo_folder(cache, *, trained):
    """The demo's data (and, when `trained`, its trained experiment), made once
    per session with the README's `make demo` steps."""
    data = cache / "demo_data"
    if not (data / "records" / "validation.manifest.json").exists():
        run_block_in(cache, "\n".join([
            "python tools/make_synthetic.py --out demo_data/synthetic --workers 2 --quiet",
            *(f"python tools/convert_videos.py --dataset synthetic --annotations "
              f"demo_data/synthetic --videos demo_data/synthetic/videos --split {s} "
              f"--out demo_data/records --short-side 56 --workers 2 --quiet"
              for s in ("train", "validation"))]), "bash")
    model = cache / "experiments" / "demo_r2plus1d_synthetic" / "stage0" / "model.keras"
    if trained and not model.exists():
        run_block_in(cache, "KF_DATA=demo_data python runs/train.py "
                     "demo_r2plus1d_synthetic.hjson --set train_loop.progress=false", "bash")


SETUPS = {
    "ssv2_sample": setup_ssv2_sample,
    "kinetics_sample": setup_kinetics_sample,
    "ucf101_sample": setup_ucf101_sample,
    "hmdb51_sample": setup_hmdb51_sample,
    "frames_sample": setup_frames_sample,
    "tiny_records": setup_tiny_records,
    "demo_data": None,  # shared, made once per session (demo_folder)
    "demo_trained": None,
}


def run_params():
    for block in BLOCKS:
        if block[4] and block[4][0] == "run":
            slow = block[4][1]["speed"] == "slow"
            yield pytest.param(block, id=block_id(block),
                               marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("block", run_params())
def test_documented_block_runs_on_stand_in_data(block, tmp_path, tmp_path_factory):
    _, _, lang, text, (_, options) = block
    setup = options.get("setup")
    work = tmp_path / "work"
    work.mkdir()
    for name in ("runs", "tools"):
        os.symlink(ROOT / name, work / name)
    if setup in ("demo_data", "demo_trained"):
        cache = tmp_path_factory.getbasetemp() / "kf_docs_demo"
        if not cache.exists():
            cache.mkdir()
            for name in ("runs", "tools"):
                os.symlink(ROOT / name, cache / name)
        demo_folder(cache, trained=setup == "demo_trained")
        # Only the trained setup gets the trained run: a block that trains the
        # demo must start from an empty experiments folder.
        names = ("demo_data", "experiments") if setup == "demo_trained" else ("demo_data",)
        for name in names:
            if (cache / name).exists():
                shutil.copytree(cache / name, work / name, symlinks=True)
    elif setup:
        SETUPS[setup](work)
    run_block_in(work, text, lang)
    if setup == "ssv2_sample":
        # What the page says: the one real clip written, the other 301 missing.
        manifest = json.loads(
            (work / "data/records/ssv2_256/validation.manifest.json").read_text())
        assert manifest["counts"]["written"] == 1
        assert manifest["counts"]["missing"] == 301
        assert len(manifest["flip_label_map"]) == 174


def test_relative_links_point_to_files():
    broken = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" not in target and not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, broken

"""The files that run klassterfork elsewhere run as written (issue 23, item 3).

- Dockerfile: hadolint finds nothing (and does find faults in a bad file);
  the build context keeps what the Dockerfile copies; the shared libraries of
  the installed wheels link nothing the `python:3.11-slim` base lacks.
- docs/cluster/kubernetes.yaml: the built image, data and experiments on
  PersistentVolumeClaims, KF_DATA / KF_EXPERIMENTS under those mounts,
  `kf-train ... -r`; the checker is shown to catch each fault.
- docs/cluster/slurm.sbatch: run with bash on stand-in `srun` / `kf-train`
  scripts: the virtualenv is activated, KF_DATA set, the command line is the
  one docs/clusters.md documents.
"""

import copy
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.setup_info import ROOT, SETUP, installed_closure

DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES = ROOT / "docs" / "cluster" / "kubernetes.yaml"
SBATCH = ROOT / "docs" / "cluster" / "slurm.sbatch"
CLUSTERS_MD = ROOT / "docs" / "clusters.md"
IMAGE = "registry.example.com/klassterfork"
# What python:3.11-slim (Debian) has of the libraries wheels may link: glibc
# (libc6), libgcc-s1, libstdc++6 (apt depends on it) and zlib1g.
BASE_IMAGE_LIBS = {
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libmvec.so.1",
    "libutil.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libz.so.1",
}


# --- Dockerfile ---------------------------------------------------------------------


def hadolint(path):
    exe = shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    ) or shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint not installed (the test extra: pip install -e '.[test]')")
    proc = subprocess.run(
        [exe, "--no-color", "-f", "json", str(path)], capture_output=True, text=True
    )
    return json.loads(proc.stdout or "[]")


def test_dockerfile_lints_clean():
    findings = hadolint(DOCKERFILE)
    assert findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}"
        for f in findings
    )


def test_hadolint_finds_faults_in_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install numpy\nCOPY . app\n")
    codes = {f["code"] for f in hadolint(bad)}
    assert {"DL3006", "DL3013", "DL3042"} <= codes, codes  # untagged, unpinned, cache


def instructions(text):
    """[(INSTRUCTION, arguments)] of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", text)
    return [
        tuple(line.strip().split(None, 1))
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_dockerfile_installs_the_package_for_a_non_root_user():
    steps = instructions(DOCKERFILE.read_text())
    kinds = [k.upper() for k, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    run = " ".join(arg for k, arg in steps if k == "RUN")
    assert re.search(r"pip install --no-cache-dir \S+ \.(\s|$)", run), run
    assert "ENTRYPOINT" in kinds and json.loads(dict(steps)["ENTRYPOINT"]) == [
        "kf-train"
    ]
    user = dict(steps)["USER"].split(":")[0]
    assert user not in ("root", "0") and kinds.index("USER") > max(
        i for i, k in enumerate(kinds) if k == "RUN"
    )
    assert re.search(rf"useradd [^&]*--uid {user}\b", run), run
    # The tags the header builds are the ones kubernetes.yaml runs.
    version = SETUP["version"]
    tags = set(re.findall(r"-t (\S+)", DOCKERFILE.read_text()))
    assert tags == {f"{IMAGE}:{version}", f"{IMAGE}:{version}-gpu"}


def dockerignored(rules, path):
    """Whether the build context leaves `path` out: the last rule matching the
    path or one of its parent folders wins (Docker's .dockerignore)."""
    parts = path.split("/")
    excluded = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            name_only = pattern.startswith("**/") and fnmatch.fnmatch(
                parts[depth - 1], pattern[3:]
            )
            if fnmatch.fnmatch(prefix, pattern) or name_only:
                excluded = not negate
                break
    return excluded


def test_build_context_keeps_what_the_dockerfile_copies():
    rules = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    copied = [
        arg.split()[0] for k, arg in instructions(DOCKERFILE.read_text()) if k == "COPY"
    ] + ["setup.py", "pyproject.toml"]
    for source in copied:
        assert (ROOT / source).exists(), source
        sample = next(
            (
                p
                for p in sorted((ROOT / source).rglob("*.py*"))
                if "__pycache__" not in p.parts
            ),
            ROOT / source,
        )
        kept = sample.relative_to(ROOT).as_posix()
        assert not dockerignored(rules, kept), kept
    for left_out in (
        ".venv/bin/python",
        "tests/test_docs.py",
        "demo_data/records/x",
        "klassterfork/__pycache__/spec.cpython-311.pyc",
        ".git/HEAD",
    ):
        assert dockerignored(rules, left_out), left_out
    # The matcher can say "kept".
    assert not dockerignored(["*", "!runs/"], "runs/train.py")


def test_installed_wheels_link_only_what_the_base_image_has():
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) not found")
    libraries = [
        Path(d.locate_file(f))
        for d in installed_closure().values()
        for f in d.files or []
        if re.search(r"\.so(\.|$)", f.name)
    ]
    bundled = {p.name for p in libraries}
    assert "libavcodec" in " ".join(bundled)  # PyAV's FFmpeg is among them
    needed = {}
    for path in libraries:
        out = subprocess.run(
            ["readelf", "-d", str(path)], capture_output=True, text=True
        ).stdout
        for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out):
            needed.setdefault(lib, path.name)
    missing = {
        lib: by
        for lib, by in needed.items()
        if lib not in bundled and lib not in BASE_IMAGE_LIBS
    }
    assert not missing, f"linked, neither bundled nor in python:3.11-slim: {missing}"
    assert {"libc.so.6", "libstdc++.so.6"} <= set(needed)  # the scan saw them


# --- Kubernetes -----------------------------------------------------------------------


def kubernetes_problems(docs, version):
    """What keeps the pods of `docs` from running as written: [str]."""
    problems = []
    claims = {
        d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"
    }
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    }
    for name, pod in pods.items():
        for container in pod["containers"]:
            gpu = "nvidia.com/gpu" in container.get("resources", {}).get("limits", {})
            want = f"{IMAGE}:{version}" + ("-gpu" if gpu else "")
            if container["image"] != want:
                problems.append(f"{name}: image {container['image']}, expected {want}")
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{name}: runAsNonRoot not set")
        for volume in pod.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim is not None and claim not in claims:
                problems.append(f"{name}: claim {claim} not defined in the file")
    return problems + trainer_problems(pods["kf-train"], claims)


def claim_under(pod, container, path, claims):
    """(volume mount, PersistentVolumeClaim) holding `path` in `container`;
    (mount, None) when the mount is not a claim, (None, None) when no mount."""
    mount = next(
        (
            m
            for m in container.get("volumeMounts", [])
            if path and (path + "/").startswith(m["mountPath"].rstrip("/") + "/")
        ),
        None,
    )
    volume = next(
        (v for v in pod["volumes"] if mount and v["name"] == mount["name"]), {}
    )
    claim = volume.get("persistentVolumeClaim", {}).get("claimName")
    return mount, claims.get(claim)


def trainer_problems(pod, claims):
    """The trainer: KF_DATA and KF_EXPERIMENTS on claims (experiments written
    by every worker), `kf-train ... -r`."""
    problems = []
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    for variable, writable in (("KF_DATA", False), ("KF_EXPERIMENTS", True)):
        value = env.get(variable)
        mount, claim = claim_under(pod, container, value, claims)
        if claim is None:
            problems.append(
                f"{variable}={value}: not under a PersistentVolumeClaim mount"
            )
        elif writable and (
            mount.get("readOnly")
            or "ReadWriteMany" not in claim["spec"].get("accessModes", [])
        ):
            problems.append(
                f"{variable}: {mount['name']} is not writable by every worker"
            )
    command = container["command"]
    if command[0] != "kf-train" or "-r" not in command:
        problems.append(f"trainer command {command}: expected kf-train ... -r")
    return problems


def kubernetes_docs():
    return [d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d]


def test_kubernetes_file_runs_the_image_on_persistent_volumes():
    docs = kubernetes_docs()
    assert kubernetes_problems(docs, SETUP["version"]) == []
    job = next(d for d in docs if d["kind"] == "Job")
    env = {
        e["name"]: e["value"]
        for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert (env["KF_DATA"], env["KF_EXPERIMENTS"]) == ("/data", "/experiments")
    # The images and the claims are named in docs/clusters.md.
    text = CLUSTERS_MD.read_text()
    assert f"{IMAGE}:{SETUP['version']}-gpu" in text
    for claim in (
        d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"
    ):
        assert f"`{claim}`" in text, claim


def trainer_of(docs):
    return next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]


def set_env(pod, name, value):
    next(e for e in pod["containers"][0]["env"] if e["name"] == name).update(
        value=value
    )


def set_experiments_volume(pod, volume):
    pod["volumes"] = [
        volume if v["name"] == "experiments" else v for v in pod["volumes"]
    ]


@pytest.mark.parametrize(
    "fault, found",
    [
        (
            lambda pod: set_experiments_volume(
                pod, {"name": "experiments", "emptyDir": {}}
            ),
            "KF_EXPERIMENTS=/experiments: not under a PersistentVolumeClaim",
        ),
        (
            lambda pod: set_env(pod, "KF_DATA", "/tmp/data"),
            "KF_DATA=/tmp/data: not under",
        ),
        (
            lambda pod: set_env(pod, "KF_DATA", "/database"),
            "KF_DATA=/database: not under",
        ),
        (
            lambda pod: pod["containers"][0]["command"].remove("-r"),
            "expected kf-train ... -r",
        ),
        (
            lambda pod: pod["containers"][0].update(image="klassterfork:latest"),
            "image klassterfork:latest",
        ),
        (
            lambda pod: pod["containers"][0]["volumeMounts"][1].update(readOnly=True),
            "KF_EXPERIMENTS: experiments is not writable",
        ),
        (lambda pod: pod.pop("securityContext"), "runAsNonRoot not set"),
    ],
)
def test_kubernetes_check_finds_each_fault(fault, found):
    docs = copy.deepcopy(kubernetes_docs())
    pod = trainer_of(docs)
    assert pod["containers"][0]["volumeMounts"][1]["mountPath"] == "/experiments"
    fault(pod)
    problems = kubernetes_problems(docs, SETUP["version"])
    assert any(found in p for p in problems), problems


def test_kubernetes_check_finds_a_claim_one_node_holds_or_none_defines():
    docs = copy.deepcopy(kubernetes_docs())
    claim = next(d for d in docs if d["metadata"]["name"] == "kf-experiments")
    claim["spec"]["accessModes"] = ["ReadWriteOnce"]
    assert kubernetes_problems(docs, SETUP["version"]) == [
        "KF_EXPERIMENTS: experiments is not writable by every worker"
    ]
    docs.remove(claim)
    assert "kf-train: claim kf-experiments not defined in the file" in (
        kubernetes_problems(docs, SETUP["version"])
    )


# --- Slurm ----------------------------------------------------------------------------

RECORDER = """#!/bin/bash
# Stand-in {name}: records where it ran from, its arguments and environment.
printf '%s\\n' "$0" "$@" > "$RECORD/{name}.argv"
env > "$RECORD/{name}.env"
{tail}
"""
# srun runs its command (here once, as task 0) after its own options.
SRUN_TAIL = 'while [[ "$1" == -* ]]; do shift; done\nexec "$@"'
SLURM_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_PROCID": "0",
    "SLURM_STEP_NUM_TASKS": "1",
    "SLURM_STEP_NODELIST": "127.0.0.1",
    "SLURM_STEP_TASKS_PER_NODE": "1",
    "SLURM_JOB_NODELIST": "127.0.0.1",
    "SLURM_SUBMIT_DIR": ".",
}


def stand_in(folder, name, tail=""):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(RECORDER.format(name=name, tail=tail))
    path.chmod(0o755)


def documented_slurm_command():
    """The `kf-train` line docs/clusters.md says each Slurm task runs."""
    lines = [
        ln
        for ln in CLUSTERS_MD.read_text().splitlines()
        if ln.startswith("kf-train ") and "train_loop.cluster=slurm" in ln
    ]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def run_sbatch(tmp_path, env, *args):
    record = tmp_path / "record"
    record.mkdir(exist_ok=True)
    stand_in(tmp_path / "bin", "srun", SRUN_TAIL)
    base = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "RECORD": str(record),
        **SLURM_ENV,
    }
    proc = subprocess.run(
        ["bash", str(SBATCH), *args],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    return proc, record


def recorded(record, name):
    argv = (record / f"{name}.argv").read_text().splitlines()
    env = dict(
        ln.split("=", 1)
        for ln in (record / f"{name}.env").read_text().splitlines()
        if "=" in ln
    )
    return argv, env


def test_slurm_script_activates_the_venv_and_runs_the_documented_command(tmp_path):
    venv = tmp_path / "home" / "klassterfork" / ".venv"  # the default KF_VENV
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
    )
    stand_in(venv / "bin", "kf-train")  # found only once the venv is active
    data = tmp_path / "kf-data"
    data.mkdir()
    proc, record = run_sbatch(tmp_path, {"KF_DATA": str(data)}, "CONFIG.hjson")
    assert proc.returncode == 0, proc.stderr
    srun_argv, _ = recorded(record, "srun")
    assert srun_argv[1:3] == ["--kill-on-bad-exit=1", "kf-train"]
    argv, env = recorded(record, "kf-train")
    assert argv[0] == str(venv / "bin" / "kf-train")
    assert argv[1:] == documented_slurm_command()[1:]
    assert env["VIRTUAL_ENV"] == str(venv)
    assert env["PATH"].split(":")[0] == str(venv / "bin")
    assert env["KF_DATA"] == str(data)
    assert env["KF_EXPERIMENTS"] == str(
        tmp_path / "home" / "klassterfork" / "experiments"
    )
    assert env["KF_CLUSTER_PORT"] == "8888"
    assert {
        k: env[k] for k in SLURM_ENV
    } == SLURM_ENV  # srun's variables reach the task


@pytest.mark.parametrize("missing", ["venv", "data"])
def test_slurm_script_names_what_is_missing(tmp_path, missing):
    venv = tmp_path / "venv"
    if missing != "venv":
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
        )
        stand_in(venv / "bin", "kf-train")
    data = tmp_path / "kf-data"
    if missing != "data":
        data.mkdir()
    proc, record = run_sbatch(
        tmp_path, {"KF_VENV": str(venv), "KF_DATA": str(data)}, "CONFIG.hjson"
    )
    assert proc.returncode == 2
    variable, path = ("KF_VENV", venv) if missing == "venv" else ("KF_DATA", data)
    assert f"{variable}={path}" in proc.stderr
    assert not (record / "srun.argv").exists()

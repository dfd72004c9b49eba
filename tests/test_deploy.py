"""Deployment files: the DaemonSet against the Kubernetes schemas, the Containerfile and the
systemd unit statically (no container engine on these machines), each against etmemd's real
command line."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from etmem_core.daemon import parse_args

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "packaging" / "kubernetes" / "etmemd.yaml"
CONTAINERFILE = ROOT / "packaging" / "Containerfile"
UNIT = ROOT / "packaging" / "etmemd.service"
K8S_VERSION = "1.30.0"  # a release still in wide use; the schemas ship in kubernetes-validate


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    yaml = pytest.importorskip("yaml")
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def daemonset(docs: list[dict]) -> dict:
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    return ds


def test_every_manifest_document_is_valid_against_the_kubernetes_schemas(docs):
    import kubernetes_validate

    assert {d["kind"] for d in docs} == {"Namespace", "ConfigMap", "DaemonSet"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_does_catch_a_wrong_manifest(docs):
    import kubernetes_validate

    bad = json.loads(json.dumps(daemonset(docs)))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "metrics"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_daemonset_asks_for_what_etmemd_needs_and_no_more(docs):
    pod = daemonset(docs)["spec"]["template"]["spec"]
    assert pod["hostPID"] is True  # it works on the node's processes
    assert not pod.get("hostNetwork") and not pod.get("hostIPC")
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE", "SYS_NICE"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert not any("hostPath" in v for v in pod["volumes"])


def test_daemonset_args_are_etmemds_and_match_its_ports_and_mounts(docs):
    pod = daemonset(docs)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    opts = parse_args(c["args"])
    assert opts.start_projects
    port = int(opts.metrics.rpartition(":")[2])
    assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    annotations = daemonset(docs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["objects"] == opts.conf_dir
    (objects,) = [v for v in pod["volumes"] if v["name"] == "objects"]
    assert objects["configMap"]["defaultMode"] == 0o400  # obj add's mode rule
    assert mounts["tmp"] == "/tmp"  # where the conf dir keeps its copies; the root fs is read-only


def test_configmap_object_files_load_as_object_files(docs, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("object files must be owned by root: run as root")
    from etmem_core.objfile import load_object_file

    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["data"]
    for name, text in cm["data"].items():
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o400)  # the ConfigMap's defaultMode
        obj = load_object_file(str(path))
        assert obj.projects and obj.engines and obj.tasks, name


def containerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_containerfile_builds_the_wheel_and_runs_etmemd_with_real_options():
    ins = containerfile_instructions()
    assert [w for w, _ in ins].count("FROM") == 2  # build stage + slim runtime
    assert ("COPY", ". .") in ins
    assert any(w == "RUN" and "pip wheel" in r for w, r in ins)
    assert any(w == "RUN" and "[metrics]" in r for w, r in ins)
    entry = json.loads(dict(ins)["ENTRYPOINT"])
    cmd = json.loads(dict(ins)["CMD"])
    assert entry == ["etmemd"]
    opts = parse_args(cmd)
    assert opts.conf_dir == "/etc/etmem/conf.d" and opts.metrics.endswith(":9743")
    assert ("EXPOSE", "9743") in ins


def test_systemd_unit_runs_etmemd_with_real_options():
    exec_start = next(
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith("ExecStart=")
    )
    argv = shlex.split(exec_start)
    assert argv[0].endswith("/etmemd")
    opts = parse_args(argv[1:])
    assert opts.mode_systemctl and opts.conf_dir == "/etc/etmem/conf.d" and opts.start_projects
    assert "ExecReload=/bin/kill -HUP $MAINPID" in UNIT.read_text()


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    # verify checks that ExecStart's program exists: point it at this environment's etmemd
    etmemd = Path(sys.executable).parent / "etmemd"
    unit = tmp_path / "etmemd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/etmemd", str(etmemd)))
    res = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    problems = [x for x in res.stderr.splitlines() if "etmemd.service" in x]
    assert problems == [], res.stderr

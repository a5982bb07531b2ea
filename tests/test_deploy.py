"""docs/deploy/ (issue 17, point 6): the Dockerfile and the Kubernetes manifests.

No cluster and no container engine run here. The manifests are validated against the published
Kubernetes JSON schemas (strict: unknown fields are errors) that the ``kubernetes-validate``
package ships, offline; their consistency (selectors, ports, the flags they pass, the DNS name
they give discovery) is checked on top. The Dockerfile is checked for what it must do.
"""

from __future__ import annotations

import argparse
import json
import os
import re

import pytest

yaml = pytest.importorskip("yaml")

from conftest import ROOT  # noqa: E402

from discovery._dns import DEFAULT_PORT, split_dns_entries  # noqa: E402
from mesh._core.options import ServerOptions  # noqa: E402

DEPLOY = os.path.join(ROOT, "docs", "deploy")
K8S = os.path.join(DEPLOY, "kubernetes")
_EDGE_FLAGS = {"--http", "--http-host", "--http-token-file"}  # the HTTP edge's flags (issue 17, point 1)


def _documents() -> list[dict]:
    docs = []
    for name in sorted(os.listdir(K8S)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(K8S, name), encoding="utf-8") as fh:
                docs += [d for d in yaml.safe_load_all(fh) if d]
    return docs


def _kind(kind: str) -> list[dict]:
    return [d for d in _documents() if d["kind"] == kind]


def _start_flags() -> set[str]:
    parser = argparse.ArgumentParser()
    ServerOptions.add_arguments(parser)
    flags = {s for a in parser._actions for s in a.option_strings}
    flags.add("--secret-file")
    if "--http" not in flags:  # the edge lands in parallel: until then its three flags are taken on trust
        flags |= _EDGE_FLAGS
    return flags


@pytest.mark.parametrize("version", ["1.29", "1.37"])
def test_the_manifests_validate_against_the_published_schemas(version):
    kv = pytest.importorskip("kubernetes_validate")
    docs = _documents()
    assert {d["kind"] for d in docs} >= {"StatefulSet", "Service"}
    for doc in docs:
        kv.validate(doc, version, strict=True)


def test_the_schema_check_catches_a_broken_manifest():
    kv = pytest.importorskip("kubernetes_validate")
    (sts,) = _kind("StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "twelve"
    with pytest.raises(kv.ValidationError):
        kv.validate(sts, "1.37", strict=True)
    (svc,) = _kind("Service")
    svc["spec"]["clusterIp"] = "None"  # a typo: strict schemas refuse unknown fields
    with pytest.raises(kv.ValidationError):
        kv.validate(svc, "1.37", strict=True)


def test_a_headless_service_selects_the_statefulset_and_names_its_ports():
    (svc,) = _kind("Service")
    (sts,) = _kind("StatefulSet")
    assert svc["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in svc["spec"]["ports"]:  # SRV records _mesh._tcp.NAME come from the port named "mesh"
        assert named[port["targetPort"]] == port["port"]
    assert named["mesh"] == DEFAULT_PORT


def test_the_server_container_runs_start_with_known_flags_a_secret_and_health_on_the_edge():
    (sts,) = _kind("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] == "start"
    flags = {a for a in args if a.startswith("--")}
    assert flags <= _start_flags(), flags - _start_flags()
    assert args[args.index("--port") + 1] == str(DEFAULT_PORT) and args[args.index("--host") + 1] == "0.0.0.0"
    http_port = int(args[args.index("--http") + 1])
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == http_port
    for probe in ("readinessProbe", "livenessProbe"):  # the edge asks /healthz for the token too
        assert container[probe]["exec"]["command"] == ["zmq-agent-server", "status", f"127.0.0.1:{DEFAULT_PORT}"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MESH_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "mesh-secret"
    token_mount = [m for m in container["volumeMounts"] if args[args.index("--http-token-file") + 1].startswith(m["mountPath"])]
    (volume,) = [v for v in pod["volumes"] if v["name"] == token_mount[0]["name"]]
    assert volume["secret"]["secretName"] == "mesh-http-token"  # the token is not the mesh secret
    assert pod["terminationGracePeriodSeconds"] > int(args[args.index("--grace") + 1])


def test_every_pod_finds_the_servers_through_the_headless_services_dns_name():
    (svc,) = _kind("Service")
    for doc in _kind("StatefulSet") + _kind("Job"):
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        peers = env["MESH_PEERS"]["value"]
        plain, sources = split_dns_entries([peers.replace("$(POD_NAMESPACE)", "default")])
        assert plain == [] and [(s.kind, s.name, s.port) for s in sources] == [
            ("a", f"{svc['metadata']['name']}.default.svc.cluster.local", DEFAULT_PORT)]
        assert env["MESH_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "mesh-secret", "key": "secret"}
        assert [e["name"] for e in container["env"]].index("POD_NAMESPACE") < list(env).index("MESH_PEERS")


def test_the_dockerfile_builds_from_the_repository_and_starts_a_server():
    with open(os.path.join(DEPLOY, "Dockerfile"), encoding="utf-8") as fh:
        lines = [line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ")  # continuation lines joined
    steps = [tuple(line.split(None, 1)) for line in text.splitlines()]
    assert all(op.isupper() for op, _ in steps), steps
    (base,) = [arg for op, arg in steps if op == "FROM"]
    assert re.fullmatch(r"python:\$\{PYTHON\}-slim", base)
    assert ("COPY", ". /src") in steps
    run = " ".join(arg for op, arg in steps if op == "RUN")
    assert 'pip install "/src[${EXTRAS}]"' in run
    entry = [arg for op, arg in steps if op == "ENTRYPOINT"][0]
    cmd = [arg for op, arg in steps if op == "CMD"][0]
    argv = [*json.loads(entry), *json.loads(cmd)]  # exec form: JSON arrays
    assert argv[:2] == ["zmq-agent-server", "start"]
    assert {a for a in argv if a.startswith("--")} <= _start_flags()
    assert [op for op, _ in steps].index("USER") > [op for op, _ in steps].index("RUN")  # not root at run time
    with open(os.path.join(DEPLOY, "Dockerfile.dockerignore"), encoding="utf-8") as fh:
        ignored = fh.read().split()
    assert ".venv" in ignored and ".git" in ignored

"""deploy/k8s/ checked against the Kubernetes API's own models, and against each other.

The ``kubernetes`` Python client's models are generated from the API server's OpenAPI
schema: a manifest that loads into them without error and serialises back to exactly the
same document has the right kinds, no missing required field, no value of the wrong type
and no unknown (misspelt) field, which the models would drop. On top of that, the pieces
must fit: the Service selects the Deployment's pods, the Ingress reaches the Service, the
probes ask ``/_stcore/health`` on the container's port, every replica reads one cookie
secret, and ingress-nginx gets the affinity, upload and websocket settings that
deploy/nginx-featapp.conf has. No cluster runs here (docs/deployment.md says so).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

kubernetes = pytest.importorskip("kubernetes", reason="pip install -r requirements-dev.txt")

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KINDS = {"Deployment": "V1Deployment", "Service": "V1Service", "Ingress": "V1Ingress"}
NGINX = "nginx.ingress.kubernetes.io/"


def lost_fields(original, loaded, path: str = "") -> list[str]:
    """Paths in ``original`` that did not survive the trip through the models."""
    if isinstance(original, dict):
        if not isinstance(loaded, dict):
            return [path or "/"]
        return [
            lost
            for key, value in original.items()
            for lost in (lost_fields(value, loaded[key], f"{path}/{key}") if key in loaded else [f"{path}/{key}"])
        ]
    if isinstance(original, list):
        if not isinstance(loaded, list) or len(loaded) != len(original):
            return [path]
        return [
            lost
            for i, (a, b) in enumerate(zip(original, loaded, strict=True))
            for lost in lost_fields(a, b, f"{path}/{i}")
        ]
    return [] if original == loaded and type(original) is type(loaded) else [f"{path} ({original!r} -> {loaded!r})"]


def validate(document: dict) -> list[str]:
    """Schema problems of one manifest: an exception from the models, or lost fields."""
    kind = KINDS.get(document.get("kind"))
    if kind is None:
        return [f"unexpected kind {document.get('kind')!r}"]
    client = kubernetes.client.ApiClient()
    try:
        model = client.deserialize(json.dumps(document), kind, None)
    except Exception as error:  # noqa: BLE001 - the models raise pydantic's or ValueError, by version
        return [f"{kind}: {error}"]
    return lost_fields(document, client.sanitize_for_serialization(model))


def manifests() -> dict[str, dict]:
    documents = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            documents[document["kind"]] = document
    return documents


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    return manifests()


def test_every_manifest_matches_the_api_schema(docs):
    assert set(docs) == set(KINDS)
    for kind, document in docs.items():
        assert validate(document) == [], kind


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}), "readinesProbe"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"), "name"),
        (lambda d: d["spec"].update(replicas="two"), "replicas"),
        (lambda d: d["metadata"].update(annotations={"a": 3600}), "annotations"),
    ],
    ids=["misspelt field", "missing required field", "wrong type", "annotation not a string"],
)
def test_the_check_catches_a_broken_manifest(docs, break_it, expected):
    broken = copy.deepcopy(docs["Deployment"])
    break_it(broken)
    problems = validate(broken)
    assert problems and expected in " ".join(problems), problems


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_the_pieces_fit_together(docs):
    deployment, service, ingress = docs["Deployment"], docs["Service"], docs["Ingress"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in ports
    assert f"--server.port={ports[service_port['targetPort']]}" in container["args"]
    assert "--server.address=0.0.0.0" in container["args"]  # a pod is reached from outside itself
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] == service_port["name"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/_stcore/health"
        assert container[probe]["httpGet"]["port"] in ports
    # Volumes mounted are volumes declared; the photos are read-only.
    declared = {volume["name"] for volume in pod["spec"]["volumes"]}
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert set(mounts) == declared
    assert mounts["photos"]["readOnly"] is True


def test_every_replica_reads_one_cookie_secret(docs):
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    env = {item["name"]: item for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    secret = env["STREAMLIT_SERVER_COOKIE_SECRET"]["valueFrom"]["secretKeyRef"]
    # The Secret is made by a command, never committed: the documented one must make this key.
    for text in ((K8S / "deployment.yaml").read_text(), (K8S.parents[1] / "docs" / "deployment.md").read_text()):
        assert f"kubectl create secret generic {secret['name']}" in text
        assert f"--from-literal={secret['key']}=" in text


def test_ingress_nginx_gets_affinity_uploads_and_websockets(docs):
    annotations = docs["Ingress"]["metadata"]["annotations"]
    assert docs["Ingress"]["spec"]["ingressClassName"] == "nginx"
    assert annotations[NGINX + "affinity"] == "cookie"
    assert annotations[NGINX + "affinity-mode"] == "persistent"
    # Uploads: Streamlit's limit (.streamlit/config.toml, MB) must pass, unbuffered.
    config = (K8S.parents[1] / ".streamlit" / "config.toml").read_text()
    limit_mb = int(next(line for line in config.splitlines() if line.startswith("maxUploadSize")).split("=")[1])
    assert int(annotations[NGINX + "proxy-body-size"].removesuffix("m")) > limit_mb
    assert annotations[NGINX + "proxy-request-buffering"] == "off"
    # Websockets stay open for an hour of thinking, like deploy/nginx-featapp.conf.
    assert int(annotations[NGINX + "proxy-read-timeout"]) >= 3600
    assert int(annotations[NGINX + "proxy-send-timeout"]) >= 3600

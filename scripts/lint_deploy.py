"""Offline checks of the deployment artifacts, run by scripts/lint-deploy.sh
inside its tool venv (kubernetes-validate, cloudcoil-models-keda, PyYAML).

  lint_deploy.py k8s RENDERED.yaml...     schema-check rendered kustomize output
  lint_deploy.py dashboard DASH.json OUT  check a Grafana dashboard and write its
                                          PromQL as a rules file for promtool

Exits non-zero with one line per problem.
"""

import json
import pathlib
import re
import sys

import yaml

# Every Kubernetes version the manifests must be valid for: the oldest one we
# support and the newest the validator knows.
K8S_VERSIONS = ["1.30.0", None]

TOPIC = "inside.coupon.issued"
GROUP = "coupon-service-group"


def fail(problems):
    for p in problems:
        print(f"lint-deploy: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


def strict(schema):
    """Adds additionalProperties: false to every object schema that lists its
    properties, so a misspelt field fails (as kubectl's strict field
    validation would reject it) instead of being pruned silently."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def scaled_object_validator():
    import jsonschema
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    # cloudcoil's models are generated from KEDA's CRDs (their OpenAPI schema).
    schema = strict(ScaledObject.model_json_schema(by_alias=True))
    return jsonschema.Draft202012Validator(schema)


def check_scaled_object(doc, partitions, where):
    problems = [f"{where}: {e.json_path}: {e.message}" for e in scaled_object_validator().iter_errors(doc)]
    spec = doc.get("spec", {})
    kafka = [t for t in spec.get("triggers", []) if t.get("type") == "kafka"]
    if len(kafka) != 1:
        problems.append(f"{where}: expected exactly one kafka trigger")
    else:
        meta = kafka[0].get("metadata", {})
        if meta.get("topic") != TOPIC or meta.get("consumerGroup") != GROUP:
            problems.append(f"{where}: the kafka trigger must watch {TOPIC} for group {GROUP}")
        if not (meta.get("bootstrapServers") or meta.get("bootstrapServersFromEnv")):
            problems.append(f"{where}: the kafka trigger names no bootstrap servers")
    # Writers beyond the partition count sit idle (deploy/README.md).
    if partitions is not None and spec.get("maxReplicaCount", 100) > partitions:
        problems.append(
            f"{where}: maxReplicaCount {spec.get('maxReplicaCount')} exceeds the "
            f"{partitions} partitions (COUPON__KAFKA__PARTITIONS)"
        )
    return problems


def api_shutdown_seconds():
    """coupon-api's request drain and producer flush, read from the code that
    sets them (crates/coupon-api/src/startup.rs), so the manifests cannot
    drift from it."""
    code = (pathlib.Path(__file__).resolve().parent.parent / "crates/coupon-api/src/startup.rs").read_text()
    drain = re.search(r"\.shutdown_timeout\((\d+)\)", code)
    flush = re.search(r"FLUSH_TIMEOUT: Duration = Duration::from_secs\((\d+)\)", code)
    if not (drain and flush):
        raise SystemExit("lint-deploy: shutdown_timeout or FLUSH_TIMEOUT not found in coupon-api's startup.rs")
    return int(drain.group(1)), int(flush.group(1))


def pre_stop_seconds(container):
    hook = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = hook.get("exec", {}).get("command", [])
    return int(command[1]) if len(command) == 2 and command[0] == "sleep" else 0


def check_operations(docs, where):
    """Rules the schemas cannot express: an autoscaled Deployment sets no
    replica count (every apply would reset what the autoscaler chose);
    coupon-api's grace period covers its preStop, request drain and producer
    flush; a PodDisruptionBudget lets NotReady pods be evicted (or a store
    outage that makes every pod unready blocks node drains)."""
    problems = []
    scaled = {
        doc["spec"]["scaleTargetRef"]["name"]
        for doc in docs
        if doc.get("kind") in ("ScaledObject", "HorizontalPodAutoscaler")
    }
    drain, flush = api_shutdown_seconds()
    for doc in docs:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        if kind == "Deployment" and name in scaled and "replicas" in doc["spec"]:
            problems.append(f"{where}: Deployment/{name} sets replicas but is autoscaled")
        if kind == "Deployment" and name == "coupon-api":
            pod = doc["spec"]["template"]["spec"]
            grace = pod.get("terminationGracePeriodSeconds", 30)
            needed = max(pre_stop_seconds(c) for c in pod["containers"]) + drain + flush
            if grace < needed:
                problems.append(
                    f"{where}: Deployment/coupon-api terminationGracePeriodSeconds {grace} < "
                    f"preStop + {drain} s drain + {flush} s flush = {needed}"
                )
        if kind == "PodDisruptionBudget" and doc["spec"].get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
            problems.append(f"{where}: PodDisruptionBudget/{name} needs unhealthyPodEvictionPolicy: AlwaysAllow")
    return problems


def cmd_k8s(paths):
    import kubernetes_validate

    problems = []
    for path in paths:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            problems.append(f"{path}: no resources")
        partitions = None
        for doc in docs:
            if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].startswith("coupon-config"):
                partitions = int(doc["data"]["COUPON__KAFKA__PARTITIONS"])
        counts = {}
        for doc in docs:
            kind = doc.get("kind")
            where = f"{path}: {kind}/{doc.get('metadata', {}).get('name')}"
            counts[kind] = counts.get(kind, 0) + 1
            if doc.get("apiVersion", "").startswith("keda.sh/"):
                if kind != "ScaledObject":
                    problems.append(f"{where}: no schema here for this KEDA kind")
                    continue
                problems += check_scaled_object(doc, partitions, where)
                continue
            for version in K8S_VERSIONS:
                version = version or kubernetes_validate.latest_version()
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    loc = "/".join(str(p) for p in e.absolute_path)
                    problems.append(f"{where} (Kubernetes {version}): {loc}: {e.message}")
                except kubernetes_validate.SchemaNotFoundError as e:
                    problems.append(f"{where}: {e.message}")
        problems += check_operations(docs, path)
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        print(f"lint-deploy: {path}: {summary}")
    fail(problems)


# Grafana's variables, replaced by values PromQL accepts.
GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    '"$namespace"': '".*"',
}


def cmd_dashboard(path, out):
    problems = []
    with open(path) as f:
        dash = json.load(f)
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dash:
            problems.append(f"{path}: missing {key}")
    ids = [p.get("id") for p in dash.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append(f"{path}: panel ids are not unique")
    rules = []
    for panel in dash.get("panels", []):
        if panel.get("type") == "row":
            continue
        if "gridPos" not in panel:
            problems.append(f"{path}: panel {panel.get('title')!r} has no gridPos")
        if not panel.get("targets"):
            problems.append(f"{path}: panel {panel.get('title')!r} has no query")
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            if "$" in expr:
                problems.append(f"{path}: panel {panel.get('title')!r}: unknown variable in {expr}")
            name = re.sub(r"[^a-zA-Z0-9_]", "_", f"panel_{panel['id']}_{target['refId']}")
            rules.append({"record": name, "expr": expr})
    with open(out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f)
    print(f"lint-deploy: {path}: {len(rules)} queries in {len(ids)} panels")
    fail(problems)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "k8s":
        cmd_k8s(sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "dashboard":
        cmd_dashboard(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)

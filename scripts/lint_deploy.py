"""Offline checks of the deployment artifacts, run by scripts/lint-deploy.sh
inside its tool venv (kubernetes-validate, cloudcoil-models-keda, PyYAML).

  lint_deploy.py k8s RENDERED.yaml...     schema-check rendered kustomize output,
                                          then the rules of each render:
                                          operations (autoscaling, grace
                                          period, PDBs), security (no API
                                          token in pods, one Secret per
                                          workload with only its keys,
                                          COUPON__DEV only in -dev namespaces,
                                          coupon-api's probes and scraping on
                                          its management port) and network
                                          policies (default deny, each
                                          workload's ingress and egress)
  lint_deploy.py dashboard DASH.json OUT  check a Grafana dashboard and write its
                                          PromQL as a rules file for promtool

Exits non-zero with one line per problem.
"""

import base64
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

ROOT = pathlib.Path(__file__).resolve().parent.parent

# What each workload (its pods' app.kubernetes.io/name) may read from a
# Secret: its own credentials and no one else's (the Redis URL and the users
# of the stores among them).
REDIS_CREDENTIALS = {
    "COUPON__REDIS__URL",
    "COUPON__REDIS__USERNAME",
    "COUPON__REDIS__PASSWORD",
    "COUPON__REDIS__SENTINEL_USERNAME",
    "COUPON__REDIS__SENTINEL_PASSWORD",
}
KAFKA_CREDENTIALS = {
    "COUPON__KAFKA__SASL_USERNAME",
    "COUPON__KAFKA__SASL_PASSWORD",
    "COUPON__KAFKA__SSL_KEY_PASSWORD",
}
SECRET_KEYS = {
    "coupon-api": {
        "COUPON__DATABASE__URL",
        "COUPON__ADMIN__TOKEN",
        "COUPON__AUTH__JWT_SECRET",
        "COUPON__AUTH__GATEWAY_SECRET",
        *REDIS_CREDENTIALS,
        *KAFKA_CREDENTIALS,
    },
    "coupon-writer": {"COUPON__DATABASE__URL", *KAFKA_CREDENTIALS},
    "coupon-reconcile": {"COUPON__DATABASE__URL", *REDIS_CREDENTIALS, *KAFKA_CREDENTIALS},
}
# Never in a ConfigMap or a literal `env` value: they are (or hold) secrets.
SECRET_ONLY = {
    "COUPON__DATABASE__URL",
    "COUPON__ADMIN__TOKEN",
    "COUPON__AUTH__JWT_SECRET",
    "COUPON__AUTH__GATEWAY_SECRET",
    "COUPON__REDIS__PASSWORD",
    "COUPON__REDIS__SENTINEL_PASSWORD",
    "COUPON__KAFKA__SASL_PASSWORD",
    "COUPON__KAFKA__SSL_KEY_PASSWORD",
}
# Secrets coupon-api refuses when shorter than MIN_SECRET_BYTES.
STRONG_SECRETS = ["COUPON__ADMIN__TOKEN", "COUPON__AUTH__JWT_SECRET", "COUPON__AUTH__GATEWAY_SECRET"]

# Ports each workload may open connections to (network-policies.yaml): DNS,
# Kafka, PostgreSQL, Redis where it reads Redis, the Pushgateway for the
# reconcile job. A new dependency is a decision: add it here and to a policy.
DNS = {("UDP", 53), ("TCP", 53)}
EGRESS_PORTS = {
    "coupon-api": DNS | {("TCP", 9092), ("TCP", 5432), ("TCP", 6379)},
    "coupon-writer": DNS | {("TCP", 9092), ("TCP", 5432)},
    "coupon-reconcile": DNS | {("TCP", 9092), ("TCP", 5432), ("TCP", 6379), ("TCP", 9091)},
}
# Container ports (by name) each workload may take connections on; each one
# from its own rule (so the gateway, allowed to `http`, never reaches
# `management`).
INGRESS_PORTS = {
    "coupon-api": {"http", "management"},
    "coupon-writer": {"metrics"},
    "coupon-reconcile": set(),
}


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
    code = (ROOT / "crates/coupon-api/src/startup.rs").read_text()
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


def rust_consts():
    """What coupon-api refuses, read from the code that refuses it: the
    shortest secret (MIN_SECRET_BYTES in coupon-infra's settings.rs) and the
    public development credentials (coupon-infra's auth.rs)."""
    settings = (ROOT / "crates/coupon-infra/src/settings.rs").read_text()
    auth = (ROOT / "crates/coupon-infra/src/auth.rs").read_text()
    min_bytes = re.search(r"pub const MIN_SECRET_BYTES: usize = (\d+);", settings)
    dev = dict(re.findall(r'pub const (DEV_ADMIN_TOKEN|DEV_JWT_SECRET): &str = "([^"]*)";', auth))
    if not min_bytes or len(dev) != 2:
        raise SystemExit("lint-deploy: MIN_SECRET_BYTES or DEV_ADMIN_TOKEN/DEV_JWT_SECRET not found in coupon-infra")
    return int(min_bytes.group(1)), set(dev.values())


def workloads(docs):
    """(where, name, pod template) of every workload; name is the pods'
    app.kubernetes.io/name."""
    found = []
    for doc in docs:
        kind = doc.get("kind")
        spec = doc.get("spec", {})
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            template = spec.get("template", {})
        elif kind == "CronJob":
            template = spec.get("jobTemplate", {}).get("spec", {}).get("template", {})
        elif kind == "Pod":
            template = doc
        else:
            continue
        labels = template.get("metadata", {}).get("labels", {})
        name = labels.get("app.kubernetes.io/name", doc["metadata"]["name"])
        found.append((f"{kind}/{doc['metadata']['name']}", name, template))
    return found


def selects(selector, labels):
    """Whether a label selector (NetworkPolicy podSelector) matches labels."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def containers(pod):
    return pod.get("initContainers", []) + pod.get("containers", [])


def decoded(secret):
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def env_of(container, configmaps, secrets):
    """A container's environment as far as the render knows it: ConfigMaps
    and Secrets of this render by value, anything else as None."""
    env = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = configmaps.get(source["configMapRef"]["name"], {})
        elif "secretRef" in source:
            data = secrets.get(source["secretRef"]["name"], {})
        else:
            data = {}
        env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env", []):
        ref = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "configMapKeyRef" in ref:
            env[var["name"]] = configmaps.get(ref["configMapKeyRef"]["name"], {}).get(ref["configMapKeyRef"]["key"])
        elif "secretKeyRef" in ref:
            env[var["name"]] = secrets.get(ref["secretKeyRef"]["name"], {}).get(ref["secretKeyRef"]["key"])
        else:
            env[var["name"]] = None
    return env


def url_has_password(url):
    return bool(re.match(r"^[a-z+]+://[^/@]*:[^/@]*@", url or ""))


def addr_port(addr):
    match = re.fullmatch(r"(.*):(\d+)", addr or "")
    return (match.group(1), int(match.group(2))) if match else (None, None)


def check_security(docs, where):
    """What issue 35 asks of every render: no Kubernetes API token in a pod;
    one Secret per workload with only the keys it reads, nothing secret in a
    ConfigMap; the development switch and credentials only in a -dev
    namespace; coupon-api's probes and scraping on its management port."""
    problems = []
    min_bytes, dev_values = rust_consts()
    namespaces = {d["metadata"].get("namespace") for d in docs} | {
        d["metadata"]["name"] for d in docs if d.get("kind") == "Namespace"
    }
    namespaces.discard(None)
    dev_render = bool(namespaces) and all(ns.endswith("-dev") for ns in namespaces)
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}
    secrets = {d["metadata"]["name"]: decoded(d) for d in docs if d.get("kind") == "Secret"}
    accounts = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ServiceAccount"}

    for name, data in configmaps.items():
        for key in sorted(SECRET_ONLY & data.keys()):
            problems.append(f"{where}: ConfigMap/{name} holds {key}: it belongs in the workload's Secret")
        if url_has_password(data.get("COUPON__REDIS__URL")):
            problems.append(f"{where}: ConfigMap/{name}: COUPON__REDIS__URL carries a password: move it to the Secrets")
        if "COUPON__DEV" in data and not dev_render:
            problems.append(f"{where}: ConfigMap/{name} sets COUPON__DEV outside a -dev namespace")
    for name, data in secrets.items():
        for key in STRONG_SECRETS:
            if key in data and len(data[key].encode()) < min_bytes:
                problems.append(f"{where}: Secret/{name}: {key} is shorter than {min_bytes} bytes")

    users = {}  # Secret name -> workloads reading it
    for kind_name, name, template in workloads(docs):
        w = f"{where}: {kind_name}"
        pod = template.get("spec", {})
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{w}: pod spec needs automountServiceAccountToken: false")
        account = accounts.get(pod.get("serviceAccountName", "default"))
        if account is not None and account.get("automountServiceAccountToken") is not False:
            problems.append(f"{w}: ServiceAccount/{account['metadata']['name']} needs automountServiceAccountToken: false")
        allowed = SECRET_KEYS.get(name)
        if allowed is None:
            problems.append(f"{w}: no SECRET_KEYS entry in scripts/lint_deploy.py for workload {name}")
            allowed = set()
        for c in containers(pod):
            c_where = f"{w} container {c['name']}"
            read = set()
            for source in c.get("envFrom", []):
                if "secretRef" in source:
                    secret = source["secretRef"]["name"]
                    read.add(secret)
                    extra = sorted(secrets.get(secret, {}).keys() - allowed)
                    if extra:
                        problems.append(f"{c_where}: Secret/{secret} holds keys it does not need: {', '.join(extra)}")
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    read.add(ref["name"])
                    if ref["key"] not in allowed:
                        problems.append(f"{c_where}: reads {ref['key']} of Secret/{ref['name']}, which it does not need")
                if var["name"] in SECRET_ONLY and "value" in var:
                    problems.append(f"{c_where}: {var['name']} written in the manifest: use the workload's Secret")
                if var["name"] == "COUPON__DEV" and not dev_render:
                    problems.append(f"{c_where}: sets COUPON__DEV outside a -dev namespace")
            for secret in read:
                users.setdefault(secret, set()).add(name)
            env = env_of(c, configmaps, secrets)
            dev_credentials = sorted(k for k in STRONG_SECRETS if env.get(k) in dev_values)
            if dev_credentials and str(env.get("COUPON__DEV")).lower() != "true":
                problems.append(
                    f"{c_where}: development credentials ({', '.join(dev_credentials)}) without COUPON__DEV=true "
                    "(coupon-api refuses them)"
                )
            if name == "coupon-api" and c in pod.get("containers", []):
                problems += check_api_container(c_where, c, env, template, docs)
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                users.setdefault(volume["secret"]["secretName"], set()).add(name)
    for secret, names in sorted(users.items()):
        if len(names) > 1:
            problems.append(f"{where}: Secret/{secret} is read by {', '.join(sorted(names))}: one Secret per workload")
    return problems


def check_api_container(where, c, env, template, docs):
    """coupon-api's /metrics and /health/* live on the management port only:
    probes and scraping go there, the Service and the gateway do not."""
    problems = []
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if "management" not in ports or "http" not in ports:
        return [f"{where}: needs container ports named http and management"]
    management, http = ports["management"], ports["http"]
    host, port = addr_port(env.get("COUPON__HTTP__MANAGEMENT_ADDR"))
    if port != management:
        problems.append(f"{where}: COUPON__HTTP__MANAGEMENT_ADDR ({env.get('COUPON__HTTP__MANAGEMENT_ADDR')}) must listen on port management ({management})")
    elif host in ("127.0.0.1", "localhost", "[::1]"):
        problems.append(f"{where}: COUPON__HTTP__MANAGEMENT_ADDR on loopback: the kubelet and Prometheus cannot reach it")
    if addr_port(env.get("COUPON__HTTP__ADDR"))[1] != http:
        problems.append(f"{where}: COUPON__HTTP__ADDR ({env.get('COUPON__HTTP__ADDR')}) must listen on port http ({http})")
    if management == http:
        problems.append(f"{where}: ports http and management must differ")
    mode = (env.get("COUPON__AUTH__MODE") or "jwt").lower()
    if mode == "jwt" and not env.get("COUPON__AUTH__JWT_AUDIENCE") and str(env.get("COUPON__AUTH__JWT_AUDIENCE_OPTIONAL")).lower() != "true":
        problems.append(f"{where}: jwt mode without COUPON__AUTH__JWT_AUDIENCE (coupon-api refuses to start)")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = c.get(probe, {}).get("httpGet")
        if get is None:
            problems.append(f"{where}: {probe} must be an httpGet on the management port")
        elif get.get("port") not in ("management", management):
            problems.append(f"{where}: {probe} targets port {get.get('port')}, not management ({management})")
    annotations = template.get("metadata", {}).get("annotations", {})
    if annotations.get("prometheus.io/scrape") == "true" and annotations.get("prometheus.io/port") != str(management):
        problems.append(f"{where}: prometheus.io/port {annotations.get('prometheus.io/port')} is not management ({management})")
    labels = template.get("metadata", {}).get("labels", {})
    for doc in docs:
        selector = doc.get("spec", {}).get("selector") if doc.get("kind") == "Service" else None
        if selector and selects({"matchLabels": selector}, labels):
            for p in doc["spec"].get("ports", []):
                if p.get("targetPort", p.get("port")) in ("management", management):
                    problems.append(f"{where}: Service/{doc['metadata']['name']} publishes the management port")
    return problems


def admits_anyone(peer):
    """A NetworkPolicy peer that matches every pod of every namespace, or
    every address."""
    if not peer:
        return True
    if peer.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0"):
        return True
    ns = peer.get("namespaceSelector")
    return "podSelector" not in peer and ns is not None and not ns.get("matchLabels") and not ns.get("matchExpressions")


def check_network_policies(docs, where):
    """Default deny for the namespace, and for every workload at least one
    policy of its own whose rules name their peers and ports: ingress only on
    INGRESS_PORTS (each port its own rule), egress only to EGRESS_PORTS, DNS
    included."""
    problems = []
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]

    def empty(selector):
        return not (selector or {}).get("matchLabels") and not (selector or {}).get("matchExpressions")

    deny = [
        p
        for p in policies
        if empty(p["spec"].get("podSelector"))
        and {"Ingress", "Egress"} <= set(p["spec"].get("policyTypes", []))
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    if not deny:
        problems.append(f"{where}: no default-deny NetworkPolicy (podSelector {{}}, policyTypes Ingress and Egress, no rules)")
    deny_names = {p["metadata"]["name"] for p in deny}
    for kind_name, name, template in workloads(docs):
        w = f"{where}: {kind_name}"
        labels = template.get("metadata", {}).get("labels", {})
        pod = template.get("spec", {})
        named = {p["name"]: (p.get("protocol", "TCP"), p["containerPort"]) for c in pod.get("containers", []) for p in c.get("ports", []) if p.get("name")}
        mine = [p for p in policies if p["metadata"]["name"] not in deny_names and selects(p["spec"].get("podSelector"), labels)]
        if not mine:
            problems.append(f"{w}: no NetworkPolicy selects its pods")
            continue
        reached, egress = set(), set()
        for policy in mine:
            p_where = f"{w}: NetworkPolicy/{policy['metadata']['name']}"
            types = policy["spec"].get("policyTypes", ["Ingress"])
            for rule in policy["spec"].get("ingress", []) if "Ingress" in types else []:
                if not rule.get("from") or any(admits_anyone(peer) for peer in rule["from"]):
                    problems.append(f"{p_where}: an ingress rule without `from` peers, or with one matching anyone, admits everyone")
                if not rule.get("ports"):
                    problems.append(f"{p_where}: an ingress rule without `ports` opens every port")
                names = set()
                for port in rule.get("ports", []):
                    value = port.get("port")
                    by_number = [n for n, (_, number) in named.items() if number == value]
                    names.add(value if isinstance(value, str) else (by_number[0] if by_number else str(value)))
                outside = names - INGRESS_PORTS.get(name, set())
                if outside:
                    problems.append(f"{p_where}: ingress on {', '.join(sorted(outside))}, not among {sorted(INGRESS_PORTS.get(name, set()))}")
                if len(names) > 1:
                    problems.append(f"{p_where}: one ingress rule opens {', '.join(sorted(names))}: give each port its own peers")
                reached |= names
            for rule in policy["spec"].get("egress", []) if "Egress" in types else []:
                if not rule.get("ports"):
                    problems.append(f"{p_where}: an egress rule without `ports` reaches every port")
                for port in rule.get("ports", []):
                    value = port.get("port")
                    if isinstance(value, str):
                        problems.append(f"{p_where}: egress port {value} by name: give the number")
                        continue
                    egress.add((port.get("protocol", "TCP"), value))
                    if port.get("endPort"):
                        problems.append(f"{p_where}: egress to a port range")
        missing = INGRESS_PORTS.get(name, set()) - reached
        if missing:
            problems.append(f"{w}: no NetworkPolicy admits anyone to {', '.join(sorted(missing))}")
        allowed = EGRESS_PORTS.get(name)
        if allowed is None:
            problems.append(f"{w}: no EGRESS_PORTS entry in scripts/lint_deploy.py for workload {name}")
        else:
            for proto, port in sorted(egress - allowed):
                problems.append(f"{w}: egress to {proto} {port} is not one of its dependencies (EGRESS_PORTS)")
        if not DNS <= egress:
            problems.append(f"{w}: no egress to DNS (UDP and TCP 53)")
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
        problems += check_security(docs, path)
        problems += check_network_policies(docs, path)
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

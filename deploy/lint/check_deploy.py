#!/usr/bin/env python3
"""Cross-checks of the deployment files that no schema can make.

hadolint reads the Dockerfile alone and kubernetes-validate one manifest at
a time; what breaks a deployment as often is two files that stopped agreeing:
a Service selecting labels no pod has, a ConfigMap that is no longer the
image's config, a grace period shorter than the drain. scripts/lint-deploy.sh
runs every subcommand here; each prints what it checked and exits 1 naming
every disagreement it found.

Usage (from the repository's root; PyYAML, Python 3.11+ for tomllib):
  check_deploy.py dockerfile     the Dockerfile against the container config
  check_deploy.py config         the container config against switchyard.toml
  check_deploy.py manifests      deploy/kubernetes/ against each other and the image
  check_deploy.py compose        docker-compose.yml's profiles and what they mount
  check_deploy.py break KIND IN OUT
                                 write a copy of the Deployment IN with one
                                 fault (KIND: unknown-field or wrong-type),
                                 which the schema check must then reject
"""

import copy
import re
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import yaml

DOCKERFILE = Path("Dockerfile")
APP_CONFIG = Path("switchyard.toml")
CONTAINER_CONFIG = Path("deploy/switchyard.container.toml")
MANIFESTS = Path("deploy/kubernetes")
COMPOSE = Path("docker-compose.yml")
WORKSPACE = Path("Cargo.toml")

# Where the Dockerfile puts what the container config names.
CONTAINER_COMPONENTS_DIR = "/opt/switchyard/components"
CONTAINER_CONFIG_PATH = "/etc/switchyard/switchyard.toml"
# The host's own default for [server] drain_timeout_ms (host/src/config.rs).
DEFAULT_DRAIN_TIMEOUT_MS = 30_000
# The services of docker-compose.yml's cluster profile.
CLUSTER_REPLICAS = ["replica-1", "replica-2", "replica-3"]


class Findings:
    """Collects every disagreement, so one run names them all."""

    def __init__(self, what):
        self.what = what
        self.problems = []
        self.checked = 0

    def check(self, ok, problem):
        self.checked += 1
        if not ok:
            self.problems.append(problem)
        return ok

    def finish(self):
        if self.problems:
            for problem in self.problems:
                print(f"check_deploy {self.what}: {problem}", file=sys.stderr)
            print(f"check_deploy {self.what}: {len(self.problems)} of {self.checked} checks failed", file=sys.stderr)
            return 1
        print(f"check_deploy {self.what}: {self.checked} checks passed")
        return 0


def load_toml(path):
    with path.open("rb") as file:
        return tomllib.load(file)


def load_yaml_documents(path):
    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def listen_port(config):
    return int(config["server"]["listen"].rsplit(":", 1)[1])


def workspace_version():
    return load_toml(WORKSPACE)["workspace"]["package"]["version"]


def dockerfile_user_id(text):
    users = re.findall(r"^USER\s+(\d+)(?::\d+)?\s*$", text, re.MULTILINE)
    return int(users[-1]) if users else None


# --- Dockerfile ---------------------------------------------------------------


def check_dockerfile():
    found = Findings("dockerfile")
    text = DOCKERFILE.read_text()
    lines = text.splitlines()

    # An ignored rule carries its reason: an ordinary comment right above.
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore=", line):
            above = lines[number - 1].strip() if number > 0 else ""
            is_reason = above.startswith("#") and "hadolint" not in above and len(above.lstrip("# ")) > 0
            found.check(is_reason, f"line {number + 1}: '{line.strip()}' has no reason comment above it")

    config = load_toml(CONTAINER_CONFIG)
    paths = {name: component["path"] for name, component in config["components"].items()}
    for name, path in paths.items():
        found.check(
            path == f"{CONTAINER_COMPONENTS_DIR}/{name}.wasm",
            f"{CONTAINER_CONFIG}: component {name} is at {path}, not where the image puts it "
            f"({CONTAINER_COMPONENTS_DIR}/{name}.wasm)",
        )
    arg = re.search(r'^ARG APP_COMPONENTS="([^"]*)"', text, re.MULTILINE)
    if found.check(arg is not None, 'no ARG APP_COMPONENTS="…" (the components the image carries)'):
        copied = set(arg.group(1).split())
        found.check(
            copied == set(paths),
            f"the image carries {sorted(copied)} but {CONTAINER_CONFIG} names {sorted(paths)}",
        )
    found.check(
        re.search(rf"^COPY {re.escape(str(CONTAINER_CONFIG))} {re.escape(CONTAINER_CONFIG_PATH)}$", text, re.MULTILINE)
        is not None,
        f"the image does not copy {CONTAINER_CONFIG} to {CONTAINER_CONFIG_PATH}",
    )
    found.check(
        f"SWITCHYARD_CONFIG={CONTAINER_CONFIG_PATH}" in text,
        f"the image does not set SWITCHYARD_CONFIG={CONTAINER_CONFIG_PATH}",
    )
    port = listen_port(config)
    found.check(
        re.search(rf"^EXPOSE {port}$", text, re.MULTILINE) is not None,
        f"the image does not EXPOSE {port}, the container config's listen port",
    )
    found.check(
        f"http://127.0.0.1:{port}/health/live" in text,
        f"HEALTHCHECK does not ask /health/live on port {port}",
    )
    found.check(re.search(r"^STOPSIGNAL SIGTERM$", text, re.MULTILINE) is not None, "no STOPSIGNAL SIGTERM")
    user = dockerfile_user_id(text)
    found.check(user is not None and user != 0, "the last USER is not a numeric, non-root user id")
    # The default image is the last stage; follow its FROM through the
    # stages it names to the image it starts from.
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE | re.IGNORECASE)
    bases = {alias: image for image, alias in stages if alias}
    base = stages[-1][0] if stages else ""
    for _ in range(len(stages)):
        base = bases.get(base, base)
    found.check(base == "debian:bookworm-slim", f"the default image starts from {base}, not debian:bookworm-slim")
    return found.finish()


# --- the container config -----------------------------------------------------


def normalized_app(config):
    """What must be the same in every config of the reference app: all but
    where it listens, its database, its files and its providers' addresses."""
    app = copy.deepcopy(config)
    for key in ("listen", "drain_timeout_ms"):
        app.get("server", {}).pop(key, None)
    app.get("database", {}).pop("url", None)
    for component in app.get("components", {}).values():
        component["path"] = Path(component["path"]).name
        hosts = component.pop("allowed_hosts", None)
        component["allowed_hosts"] = len(hosts) if hosts is not None else None
        url = component.get("config", {}).get("url")
        if url is not None:
            component["config"]["url"] = urlsplit(url).path
    return app


def check_config():
    found = Findings("config")
    reference = load_toml(APP_CONFIG)
    container = load_toml(CONTAINER_CONFIG)
    reference_app, container_app = normalized_app(reference), normalized_app(container)
    for section in sorted(set(reference_app) | set(container_app)):
        found.check(
            reference_app.get(section) == container_app.get(section),
            f"[{section}] differs between {APP_CONFIG} and {CONTAINER_CONFIG} beyond listen, database, "
            f"paths and provider addresses:\n  {reference_app.get(section)}\n  {container_app.get(section)}",
        )
    found.check(
        container["server"]["listen"].startswith("0.0.0.0:"),
        f"{CONTAINER_CONFIG} listens on {container['server']['listen']}, not on every interface",
    )
    for name, component in container["components"].items():
        url = component.get("config", {}).get("url")
        if url is not None:
            found.check(
                urlsplit(url).netloc in component.get("allowed_hosts", []),
                f"{CONTAINER_CONFIG}: component {name} posts to {url}, outside its allowed_hosts",
            )
    found.check("cluster" not in container, f"{CONTAINER_CONFIG} has a [cluster] section (not for this host yet)")
    return found.finish()


# --- Kubernetes manifests -----------------------------------------------------


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def check_manifests():
    found = Findings("manifests")
    objects = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in load_yaml_documents(path):
            key = (doc.get("kind"), doc.get("metadata", {}).get("name"))
            found.check(key not in objects, f"{path}: {key[0]}/{key[1]} is defined twice")
            objects[key] = doc
    container_text = CONTAINER_CONFIG.read_text()
    container = tomllib.loads(container_text)
    port = listen_port(container)
    version = workspace_version()
    image_user = dockerfile_user_id(DOCKERFILE.read_text())

    deployment = objects.get(("Deployment", "switchyard"))
    if not found.check(deployment is not None, "no Deployment switchyard"):
        return found.finish()
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    found.check(spec.get("replicas") == 3, "the Deployment does not start three replicas")
    found.check(
        labels_match(spec["selector"]["matchLabels"], pod_labels),
        "the Deployment's selector does not match its pod labels",
    )
    container_spec = next((c for c in pod["containers"] if c["name"] == "switchyard"), None)
    if not found.check(container_spec is not None, "the Deployment has no container named switchyard"):
        return found.finish()

    found.check(
        container_spec["image"].endswith(f":{version}"),
        f"image {container_spec['image']} is not tagged with the workspace version {version}",
    )
    ports = {p.get("name"): p["containerPort"] for p in container_spec.get("ports", [])}
    found.check(ports.get("http") == port, f"container port http is {ports.get('http')}, the config listens on {port}")

    def probe_path(name):
        probe = container_spec.get(name, {}).get("httpGet", {})
        return probe.get("path"), probe.get("port")

    found.check(probe_path("readinessProbe") == ("/health/ready", "http"), "readiness probe is not GET /health/ready on http")
    found.check(probe_path("livenessProbe") == ("/health/live", "http"), "liveness probe is not GET /health/live on http")

    env = {e["name"]: e for e in container_spec.get("env", [])}
    env_order = [e["name"] for e in container_spec.get("env", [])]

    def field_ref(name):
        return env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")

    found.check(field_ref("SWITCHYARD_REPLICA_ID") == "metadata.name", "SWITCHYARD_REPLICA_ID is not the pod's name")
    advertise = env.get("SWITCHYARD_ADVERTISE", {}).get("value", "")
    reference = re.fullmatch(r"\$\((\w+)\):(\d+)", advertise)
    if found.check(reference is not None, f"SWITCHYARD_ADVERTISE is '{advertise}', not $(VAR):PORT"):
        variable, advertised_port = reference.group(1), int(reference.group(2))
        found.check(field_ref(variable) == "status.podIP", f"{variable} is not the pod's IP")
        found.check(
            variable in env_order and env_order.index(variable) < env_order.index("SWITCHYARD_ADVERTISE"),
            f"{variable} must come before SWITCHYARD_ADVERTISE for $({variable}) to expand",
        )
        found.check(advertised_port == port, f"SWITCHYARD_ADVERTISE names port {advertised_port}, the config {port}")

    secret_refs = [
        (name, e["valueFrom"]["secretKeyRef"]) for name, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})
    ]
    found.check(
        {name for name, _ in secret_refs} >= {"DATABASE_URL", "SWITCHYARD_ADMIN_TOKEN"},
        "DATABASE_URL and SWITCHYARD_ADMIN_TOKEN do not both come from a Secret",
    )
    for name, ref in secret_refs:
        secret = objects.get(("Secret", ref["name"]))
        keys = set((secret or {}).get("stringData", {})) | set((secret or {}).get("data", {}))
        found.check(ref["key"] in keys, f"{name} reads key {ref['key']} of Secret {ref['name']}, which has no such key")

    # The config: a ConfigMap holding the container config verbatim, mounted
    # where SWITCHYARD_CONFIG looks.
    config_path = env.get("SWITCHYARD_CONFIG", {}).get("value", CONTAINER_CONFIG_PATH)
    config_dir, config_file = config_path.rsplit("/", 1)
    mounts = {m["mountPath"]: m["name"] for m in container_spec.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    volume = volumes.get(mounts.get(config_dir, ""), {})
    config_map_name = volume.get("configMap", {}).get("name")
    config_map = objects.get(("ConfigMap", config_map_name))
    if found.check(config_map is not None, f"no ConfigMap is mounted at {config_dir}"):
        items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
        key = items.get(config_file, config_file)
        found.check(
            config_map.get("data", {}).get(key) == container_text,
            f"ConfigMap {config_map_name} key {key} is not {CONTAINER_CONFIG} verbatim (copy the file into it)",
        )

    annotations = spec["template"]["metadata"].get("annotations", {})
    found.check(annotations.get("prometheus.io/scrape") == "true", "no prometheus.io/scrape: \"true\" annotation")
    found.check(annotations.get("prometheus.io/port") == str(port), f"prometheus.io/port is not \"{port}\"")
    found.check(annotations.get("prometheus.io/path") == "/metrics", "prometheus.io/path is not /metrics")

    # The grace period covers the preStop pause and the drain.
    pre_stop = container_spec.get("lifecycle", {}).get("preStop", {})
    command = pre_stop.get("exec", {}).get("command", [])
    pause = pre_stop.get("sleep", {}).get("seconds")
    if pause is None and len(command) == 2 and command[0] == "sleep":
        pause = int(command[1])
    if found.check(pause is not None, "no preStop pause (exec sleep N, or sleep.seconds)"):
        drain = container.get("server", {}).get("drain_timeout_ms", DEFAULT_DRAIN_TIMEOUT_MS) / 1000
        grace = pod.get("terminationGracePeriodSeconds", 30)
        found.check(
            grace > pause + drain,
            f"terminationGracePeriodSeconds {grace} does not cover the preStop pause ({pause} s) "
            f"plus the drain ({drain:g} s)",
        )

    pod_security = pod.get("securityContext", {})
    found.check(pod_security.get("runAsNonRoot") is True, "the pod does not require runAsNonRoot")
    found.check(
        pod_security.get("runAsUser") == image_user,
        f"runAsUser {pod_security.get('runAsUser')} is not the image's user {image_user}",
    )

    for (kind, name), obj in objects.items():
        if kind != "Deployment":
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            resources = c.get("resources", {})
            found.check(
                {"cpu", "memory"} <= set(resources.get("requests", {}))
                and {"memory"} <= set(resources.get("limits", {})),
                f"Deployment {name} container {c['name']} lacks cpu/memory requests or a memory limit",
            )
            security = c.get("securityContext", {})
            found.check(
                security.get("allowPrivilegeEscalation") is False,
                f"Deployment {name} container {c['name']} allows privilege escalation",
            )

    # The objects that point at the Deployment's pods.
    for kind in ("Service", "PodDisruptionBudget"):
        for (other_kind, name), obj in objects.items():
            if other_kind != kind or obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", "host") != "host":
                continue
            selector = obj["spec"].get("selector", {})
            selector = selector.get("matchLabels", selector)
            found.check(labels_match(selector, pod_labels), f"{kind} {name} selects no pod of Deployment switchyard")
    service = objects.get(("Service", "switchyard"))
    if found.check(service is not None, "no Service switchyard"):
        for service_port in service["spec"]["ports"]:
            target = service_port.get("targetPort")
            found.check(
                target in ports or target in ports.values(),
                f"Service switchyard targets port {target}, which the container does not declare",
            )
    pdb = objects.get(("PodDisruptionBudget", "switchyard"))
    hpa = objects.get(("HorizontalPodAutoscaler", "switchyard"))
    if found.check(pdb is not None and hpa is not None, "no PodDisruptionBudget or HorizontalPodAutoscaler switchyard"):
        target = hpa["spec"]["scaleTargetRef"]
        found.check(
            (target["kind"], target["name"]) == ("Deployment", "switchyard"),
            "the HorizontalPodAutoscaler does not scale Deployment switchyard",
        )
        minimum, maximum = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
        found.check(minimum <= spec["replicas"] <= maximum, "the Deployment's replicas are outside the autoscaler's range")
        found.check(
            isinstance(pdb["spec"].get("minAvailable"), int) and pdb["spec"]["minAvailable"] < minimum,
            "the PodDisruptionBudget's minAvailable leaves no replica free to move at the autoscaler's minimum",
        )

    # The connectors' provider: the demo's simulator Service, when it is here.
    hosts = {h for c in container["components"].values() for h in c.get("allowed_hosts", [])}
    simulator = objects.get(("Service", "provider-simulator"))
    if simulator is not None:
        offered = {f"provider-simulator:{p['port']}" for p in simulator["spec"]["ports"]}
        found.check(hosts <= offered, f"the connectors reach {sorted(hosts)}; Service provider-simulator offers {sorted(offered)}")
    return found.finish()


# --- docker-compose.yml -------------------------------------------------------


def published_ports(service):
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        yield parts


def check_compose():
    found = Findings("compose")
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose.get("services", {})
    container = load_toml(CONTAINER_CONFIG)
    port = listen_port(container)

    def profile(name):
        return services.get(name, {}).get("profiles", [])

    for name in ("prometheus", "grafana"):
        found.check(profile(name) == ["observability"], f"service {name} is not (only) in the observability profile")
    found.check(
        "prometheus.docker.yml" in " ".join(services.get("prometheus", {}).get("command", [])),
        "the observability Prometheus no longer reads prometheus.docker.yml",
    )
    cluster = {name for name, service in services.items() if "cluster" in service.get("profiles", [])}
    expected = {"postgres", "haproxy", "cluster-prometheus", "provider-simulator", *CLUSTER_REPLICAS}
    found.check(cluster == expected, f"the cluster profile has {sorted(cluster)}, expected {sorted(expected)}")

    postgres = services.get("postgres", {})
    found.check(str(postgres.get("image", "")).startswith("postgres:"), "postgres is not the official postgres image")
    found.check("healthcheck" in postgres, "postgres has no healthcheck for the replicas to wait on")
    database = postgres.get("environment", {}).get("POSTGRES_DB")

    advertised = []
    for name in CLUSTER_REPLICAS:
        service = services.get(name, {})
        env = service.get("environment", {})
        found.check("build" in service, f"{name} is not built from the Dockerfile (build:)")
        url = urlsplit(str(env.get("DATABASE_URL", "")))
        found.check(
            url.scheme == "postgres" and url.hostname == "postgres" and url.path.lstrip("/") == database,
            f"{name}'s DATABASE_URL is not the postgres service's database {database}",
        )
        found.check(env.get("SWITCHYARD_REPLICA_ID") == name, f"{name}'s SWITCHYARD_REPLICA_ID is not {name}")
        found.check(
            env.get("SWITCHYARD_ADVERTISE") == f"{name}:{port}",
            f"{name}'s SWITCHYARD_ADVERTISE is not {name}:{port}",
        )
        found.check(bool(env.get("SWITCHYARD_ADMIN_TOKEN")), f"{name} has no SWITCHYARD_ADMIN_TOKEN")
        depends = service.get("depends_on", {})
        found.check(
            isinstance(depends, dict) and depends.get("postgres", {}).get("condition") == "service_healthy",
            f"{name} does not wait for postgres to be healthy",
        )
        advertised.append(f"{name}:{port}")
    ids = [services.get(n, {}).get("environment", {}).get("SWITCHYARD_REPLICA_ID") for n in CLUSTER_REPLICAS]
    found.check(len(set(ids)) == len(ids), f"replica ids are not unique: {ids}")

    # Every file a service mounts exists; HAProxy and Prometheus name the replicas.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                found.check(Path(source).exists(), f"{name} mounts {source}, which does not exist")
    haproxy = services.get("haproxy", {})
    found.check(str(haproxy.get("image", "")).startswith("haproxy:"), "haproxy is not the official haproxy image")
    haproxy_config = next(
        (Path(str(v).split(":")[0]) for v in haproxy.get("volumes", []) if str(v).endswith("haproxy.cfg:ro")), None
    )
    if found.check(haproxy_config is not None and haproxy_config.exists(), "haproxy mounts no haproxy.cfg"):
        text = haproxy_config.read_text()
        servers = re.findall(r"^\s*server\s+\S+\s+(\S+)\s.*\bcheck\b", text, re.MULTILINE)
        found.check(sorted(servers) == sorted(advertised), f"{haproxy_config} balances {servers}, not {advertised}")
        found.check(
            re.search(r"^\s*option httpchk GET /health/ready\s*$", text, re.MULTILINE) is not None,
            f"{haproxy_config} does not check GET /health/ready",
        )
        found.check(
            re.search(r"^\s*http-check expect status 200\s*$", text, re.MULTILINE) is not None,
            f"{haproxy_config} does not expect status 200",
        )
    prometheus = services.get("cluster-prometheus", {})
    config_arg = next((a for a in prometheus.get("command", []) if a.startswith("--config.file=")), "")
    mount = next((str(v).split(":") for v in prometheus.get("volumes", []) if ":/etc/prometheus" in str(v)), None)
    if found.check(bool(config_arg) and mount is not None, "cluster-prometheus has no mounted --config.file"):
        config_file = Path(mount[0]) / Path(config_arg.split("=", 1)[1]).relative_to(mount[1])
        if found.check(config_file.exists(), f"cluster-prometheus reads {config_file}, which does not exist"):
            scrape = yaml.safe_load(config_file.read_text())
            targets = [t for job in scrape["scrape_configs"] for s in job.get("static_configs", []) for t in s["targets"]]
            found.check(sorted(targets) == sorted(advertised), f"{config_file} scrapes {targets}, not {advertised}")

    simulator_hosts = {h for c in container["components"].values() for h in c.get("allowed_hosts", [])}
    found.check(
        all(h.split(":")[0] in services for h in simulator_hosts),
        f"the connectors reach {sorted(simulator_hosts)}, which name no compose service",
    )

    # Published ports stay on loopback, and no profile publishes one twice.
    for profile_name in ("observability", "cluster"):
        seen = {}
        for name, service in services.items():
            if profile_name not in service.get("profiles", []):
                continue
            for parts in published_ports(service):
                found.check(
                    len(parts) == 3 and parts[0] == "127.0.0.1",
                    f"{name} publishes {':'.join(parts)} beyond loopback",
                )
                host_port = parts[-2]
                found.check(
                    host_port not in seen,
                    f"{name} and {seen.get(host_port)} both publish port {host_port} in the {profile_name} profile",
                )
                seen[host_port] = name
    return found.finish()


# --- a broken copy ------------------------------------------------------------


def write_broken(kind, source, target):
    docs = load_yaml_documents(Path(source))
    deployment = next(d for d in docs if d.get("kind") == "Deployment")
    container_spec = deployment["spec"]["template"]["spec"]["containers"][0]
    if kind == "unknown-field":
        # A misspelt key: Kubernetes would drop it silently and run the pod
        # with no readiness probe at all.
        container_spec["readinessProbes"] = container_spec.pop("readinessProbe")
    elif kind == "wrong-type":
        deployment["spec"]["replicas"] = "three"
    elif kind == "none":
        pass
    else:
        print(f"check_deploy break: unknown fault {kind}", file=sys.stderr)
        return 2
    Path(target).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


def main(argv):
    commands = {
        "dockerfile": check_dockerfile,
        "config": check_config,
        "manifests": check_manifests,
        "compose": check_compose,
    }
    if len(argv) == 2 and argv[1] in commands:
        return commands[argv[1]]()
    if len(argv) == 5 and argv[1] == "break":
        return write_broken(argv[2], argv[3], argv[4])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

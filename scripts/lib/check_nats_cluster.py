"""The NATS cluster's shape in docker-compose.yml and infra/k8s (scripts/check-contracts).

Both must run three NATS nodes configured by infra/k8s/nats-cluster.conf with the generated
permissions beside it, each with its own name and store, routes to all three, and every
callcenter container or pod must list the three nodes in CC_NATS_URL. Prints what is wrong and
exits 1, else prints a summary.
"""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


def hosts(url_list, port):
    """The hosts of a comma-separated list of nats:// URLs on `port` (None: another shape)."""
    out = []
    for url in url_list.split(","):
        m = re.fullmatch(r"nats://([A-Za-z0-9.-]+):(\d+)", url.strip())
        if not m or int(m.group(2)) != port:
            return None
        out.append(m.group(1))
    return out


# The node file: what each node must be given.
conf = (ROOT / "infra/k8s/nats-cluster.conf").read_text()
node_vars = sorted(set(re.findall(r"\$(NATS_[A-Z0-9_]+)", conf)))
check(
    node_vars == ["NATS_CLUSTER_LISTEN", "NATS_NODE_NAME", "NATS_ROUTE_1", "NATS_ROUTE_2", "NATS_ROUTE_3"],
    f"nats-cluster.conf: unexpected variables {node_vars}",
)
check("include nats-permissions.conf" in conf, "nats-cluster.conf does not include nats-permissions.conf")

# docker-compose.yml
compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
services = compose["services"]
nodes = sorted(n for n in services if re.fullmatch(r"nats(-\d+)?", n))
check(nodes == ["nats-1", "nats-2", "nats-3"], f"docker-compose.yml: NATS services {nodes}, not nats-1..3")
routes = {f"nats://{n}:6222" for n in nodes}
stores = set()
for n in nodes:
    s = services[n]
    env = s.get("environment", {})
    cmd = s.get("command", [])
    check("/etc/nats/nats-cluster.conf" in cmd, f"docker-compose.yml {n}: not configured by nats-cluster.conf")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in s.get("volumes", [])}
    check(
        mounts.get("/etc/nats/nats-cluster.conf") == "./infra/k8s/nats-cluster.conf"
        and mounts.get("/etc/nats/nats-permissions.conf") == "./infra/k8s/nats-permissions.conf",
        f"docker-compose.yml {n}: nats-cluster.conf and nats-permissions.conf not mounted side by side",
    )
    store = cmd[cmd.index("-sd") + 1] if "-sd" in cmd else None
    stores.add(mounts.get(store))
    check(env.get("NATS_NODE_NAME") == n, f"docker-compose.yml {n}: NATS_NODE_NAME {env.get('NATS_NODE_NAME')!r}")
    got = {env.get(f"NATS_ROUTE_{i}") for i in (1, 2, 3)}
    check(got == routes, f"docker-compose.yml {n}: routes {sorted(map(str, got))}, not {sorted(routes)}")
check(len(stores) == 3 and None not in stores, f"docker-compose.yml: the nodes' stores {stores} are not three volumes")
for name, s in services.items():
    if s.get("image") != "callcenter:local":
        continue
    url = s.get("environment", {}).get("CC_NATS_URL", "")
    check(hosts(url, 4222) is not None and sorted(hosts(url, 4222)) == nodes,
          f"docker-compose.yml {name}: CC_NATS_URL {url!r} does not list {nodes}")
    if name != "migrate":
        check(set(nodes) <= set(s.get("depends_on", {})), f"docker-compose.yml {name}: does not wait for every NATS node")

# infra/k8s
docs = [d for f in sorted((ROOT / "infra/k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
sets = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "nats"]
check(len(sets) == 1, "infra/k8s: no StatefulSet nats")
pods = []
if sets:
    sts = sets[0]
    spec = sts["spec"]
    svc = spec.get("serviceName")
    headless = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == svc]
    check(spec.get("replicas") == 3, f"infra/k8s nats: {spec.get('replicas')} replicas, not 3")
    check(bool(headless) and headless[0]["spec"].get("clusterIP") == "None",
          f"infra/k8s nats: serviceName {svc!r} is not a headless Service")
    pods = [f"nats-{i}.{svc}" for i in range(3)]
    c = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c.get("env", [])}
    got = {env.get(f"NATS_ROUTE_{i}", {}).get("value") for i in (1, 2, 3)}
    check(got == {f"nats://{p}:6222" for p in pods}, f"infra/k8s nats: routes {got}")
    check(env.get("NATS_NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
          "infra/k8s nats: NATS_NODE_NAME is not the pod's name")
    args = c.get("args", [])
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    store = args[args.index("-sd") + 1] if "-sd" in args else None
    check(mounts.get(store) in claims, f"infra/k8s nats: the store {store} is not on a volumeClaimTemplate")
    conf_path = args[args.index("-c") + 1] if "-c" in args else ""
    vols = {v["name"]: v for v in spec["template"]["spec"].get("volumes", [])}
    conf_vol = vols.get(mounts.get(str(pathlib.PurePosixPath(conf_path).parent)), {})
    cm = conf_vol.get("configMap", {}).get("name")
    kustomization = yaml.safe_load((ROOT / "infra/k8s/kustomization.yaml").read_text())
    generated = {g["name"]: g.get("files", []) for g in kustomization.get("configMapGenerator", [])}
    check(pathlib.PurePosixPath(conf_path).name == "nats-cluster.conf"
          and set(generated.get(cm, [])) >= {"nats-cluster.conf", "nats-permissions.conf"},
          f"infra/k8s nats: {conf_path} is not nats-cluster.conf beside nats-permissions.conf (ConfigMap {cm})")
    check("nats.yaml" in kustomization.get("resources", []), "infra/k8s/kustomization.yaml does not list nats.yaml")
config = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "callcenter-config"]
url = config[0]["data"].get("CC_NATS_URL", "") if config else ""
check(hosts(url, 4222) is not None and sorted(hosts(url, 4222)) == pods,
      f"infra/k8s/configmap.yaml: CC_NATS_URL {url!r} does not list {pods}")
for d in docs:
    if d["kind"] not in ("Deployment", "Job"):
        continue
    for c in d["spec"]["template"]["spec"]["containers"]:
        for e in c.get("env", []):
            check(e["name"] != "CC_NATS_URL", f"infra/k8s {d['metadata']['name']}: its own CC_NATS_URL")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"NATS cluster: {len(nodes)} compose nodes, {len(pods)} Kubernetes pods, every service lists them")

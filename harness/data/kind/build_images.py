"""``make kind-images``: everything a kind cluster needs, built on this machine with no image registry.

Sources are the Go module proxy (kind, Kubernetes, etcd, CoreDNS, KubeRay), Debian's packages (systemd,
containerd, runc, CNI plugins, Python, Redis: through debootstrap) and PyPI (Ray's wheels, pinned by
requirements.lock). Nothing is pulled from a container registry. What it builds:

- ``bin/``: kind, kubeadm, kubelet, kubectl, the control-plane binaries, etcd, coredns, pause, the KubeRay operator;
- Docker images: the control-plane images under the exact tags ``kubeadm config images list`` prints, the
  pause image containerd's ``sandbox_image`` names, our CNI agent, the kind node image (a debootstrap root laid
  out as kind's own ``images/base`` and ``pkg/build/nodeimage`` lay it out, with every image above imported and
  pinned in its containerd), Ray's image, Redis's image, the KubeRay operator's image;
- ``manifests/kuberay-operator.yaml``: KubeRay's CRDs, RBAC and Deployment from its module's ``config/``.

Each part is cached under ``$SERVE_CHAOS_KIND_CACHE`` (default ``~/.cache/serve-chaos/kind``) and keyed on
what it is built from; a second run rebuilds nothing that did not change. Progress goes to stdout, one line
per part with its time; ``build-times.json`` in the cache keeps the last time of each part.

Usage: ``python cluster/kind/build_images.py [--only PART ...] [--force PART ...] [--list]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # cluster/ is harness/data/
sys.path.insert(0, str(ROOT))

from harness.kube.settings import KIND_CACHE, OFFLINE_SETTINGS, load_settings  # noqa: E402
from harness.waiting import WaitTimeout, wait_until  # noqa: E402

HERE = Path(__file__).resolve().parent
RECIPE = tomllib.loads((HERE / "images.toml").read_text())
VERSIONS: dict[str, str] = RECIPE["versions"]
DEBIAN = RECIPE["debian"]
SETTINGS = load_settings(OFFLINE_SETTINGS)
CACHE = KIND_CACHE
BIN = CACHE / "bin"
GOENV = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false", "GOPATH": os.environ.get(
    "GOPATH", str(Path.home() / "go"))}
K8S_BINARIES = ("kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                "kube-proxy")
CONTROL_PLANE_IMAGES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
KIND_IMAGES_LABEL = "serve-chaos.kind-images"


class BuildError(RuntimeError):
    """A part could not be built; the message names the part, the command and its output's tail."""


def log(message: str) -> None:
    print(f"[kind-images] {message}", flush=True)


def run(argv: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        stdin: bytes | None = None, timeout_s: float = 3600, capture: bool = False) -> str:
    """Run a command; on failure raise BuildError with the last lines of its output."""
    proc = subprocess.run(list(argv), cwd=cwd, env=env, input=stdin, capture_output=True, timeout=timeout_s)
    if proc.returncode != 0:
        output = (proc.stdout + b"\n" + proc.stderr).decode(errors="replace").strip()
        tail = "\n".join(output.splitlines()[-20:])
        raise BuildError(f"`{' '.join(map(str, argv))}` exited {proc.returncode}:\n{tail}")
    return proc.stdout.decode(errors="replace") if capture else ""


def module_dir(module: str, version: str) -> Path:
    """Download a Go module (at an exact version) from the module proxy; return its folder in the cache."""
    out = run(("go", "mod", "download", "-json", f"{module}@{version}"), env={**GOENV, "GOFLAGS": ""},
              cwd=Path(tempfile.gettempdir()), capture=True)
    return Path(json.loads(out)["Dir"])


def image_exists(tag: str) -> bool:
    return subprocess.run(("docker", "image", "inspect", tag), capture_output=True).returncode == 0


# --- the host: Docker's engine, with a runc that asks only for capabilities this host has ------------------

SHIM = Path("/usr/local/lib/serve-chaos/runc-shim")
SHIM_RUNTIME = "serve-chaos-runc"
DAEMON_JSON = Path("/etc/docker/daemon.json")
DOCKER_START_S = 60.0
DOCKERD_LOG = Path("/var/log/serve-chaos-dockerd.log")


def missing_capabilities() -> int:
    """How many capabilities root's bounding set lacks (a privileged container asks for all of them)."""
    with open("/proc/self/status") as status:
        bounding = next(int(line.split()[1], 16) for line in status if line.startswith("CapBnd:"))
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    return sum(1 for bit in range(last_cap + 1) if not bounding >> bit & 1)


def docker_answers() -> bool:
    return subprocess.run(("docker", "info"), capture_output=True).returncode == 0


def host_ready() -> bool:
    if not (shutil.which("docker") and shutil.which("debootstrap") and docker_answers()):
        return False
    if not missing_capabilities():
        return True
    info = subprocess.run(("docker", "info", "--format", "{{.DefaultRuntime}}"), capture_output=True, text=True)
    shim = BIN / "runc-shim"
    return (info.stdout.strip() == SHIM_RUNTIME and SHIM.is_file() and shim.is_file()
            and SHIM.read_bytes() == shim.read_bytes())


def build_host() -> None:
    """Debian's docker.io and debootstrap; on a host whose bounding set lacks a capability, runc-shim as
    Docker's default runtime (kind's nodes are privileged containers); the engine started and answering."""
    missing = [pkg for pkg, tool in (("docker.io", "dockerd"), ("debootstrap", "debootstrap")) if not shutil.which(tool)]
    if missing:
        run(("apt-get", "update", "-qq"), timeout_s=600)
        run(("apt-get", "install", "-y", "-qq", *missing), env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            timeout_s=1200)
    restart = False
    if missing_capabilities():
        SHIM.parent.mkdir(parents=True, exist_ok=True)
        if not (BIN / "runc-shim").is_file():
            build_shim()
        staged = SHIM.with_suffix(".new")
        shutil.copy2(BIN / "runc-shim", staged)
        staged.chmod(0o755)
        staged.replace(SHIM)  # a rename: a runc-shim being executed is never overwritten
        config = json.loads(DAEMON_JSON.read_text()) if DAEMON_JSON.exists() else {}
        wanted = {**config, "runtimes": {**config.get("runtimes", {}), SHIM_RUNTIME: {"path": str(SHIM)}},
                  "default-runtime": SHIM_RUNTIME}
        if wanted != config:
            DAEMON_JSON.parent.mkdir(parents=True, exist_ok=True)
            DAEMON_JSON.write_text(json.dumps(wanted, indent=1))
            restart = True
            log(f"runc-shim is Docker's default runtime ({DAEMON_JSON}): root's bounding set lacks "
                f"{missing_capabilities()} capability")
    if docker_answers() and not restart:
        return
    if Path("/run/systemd/system").is_dir():
        run(("systemctl", "restart" if restart else "start", "docker"), timeout_s=120)
    else:
        if restart and (pid := Path("/var/run/docker.pid")).exists():
            os.kill(int(pid.read_text()), signal.SIGTERM)
            wait_until("the Docker engine to stop (to restart it with runc-shim)", lambda: not docker_answers(),
                       timeout_s=DOCKER_START_S)
        with DOCKERD_LOG.open("ab") as out:
            subprocess.Popen(("dockerd",), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    wait_until("the Docker engine to answer `docker info`", docker_answers, timeout_s=DOCKER_START_S,
               describe=lambda: f"dockerd's log: {DOCKERD_LOG}")


# --- parts ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    name: str
    what: str
    key: Callable[[], str]            # what the part is built from; a change rebuilds it
    done: Callable[[], bool]          # its outputs exist
    build: Callable[[], None]


def _files_key(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _bins(*names: str) -> Callable[[], bool]:
    return lambda: all((BIN / n).is_file() for n in names)


def _images(*tags: str) -> Callable[[], bool]:
    return lambda: all(image_exists(t) for t in tags)


def build_shim() -> None:
    """cluster/kind/runcshim: runc minus what this host cannot grant (its doc says what and why)."""
    BIN.mkdir(parents=True, exist_ok=True)
    run(("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(BIN / "runc-shim"), "."), cwd=HERE / "runcshim",
        env=GOENV)


def build_kind() -> None:
    BIN.mkdir(parents=True, exist_ok=True)
    run(("go", "install", f"sigs.k8s.io/kind@{VERSIONS['kind']}"), env={**GOENV, "GOBIN": str(BIN), "GOFLAGS": ""})


def _wrapper_module(name: str, require: str, version: str, replaces: dict[str, str]) -> Path:
    """A module that requires ``require@version`` with ``replace`` lines (Kubernetes' and etcd's go.mod point
    their own sub-modules at local folders, which a plain ``go install mod@version`` refuses)."""
    src = CACHE / "src" / name
    src.mkdir(parents=True, exist_ok=True)
    lines = [f"module serve-chaos/kind-{name}", "", "go 1.24.0", "", f"require {require} {version}", "", "replace ("]
    lines += [f"\t{mod} => {mod} {ver}" for mod, ver in sorted(replaces.items())] + [")", ""]
    (src / "go.mod").write_text("\n".join(lines))
    return src


def _kubernetes_ldflags() -> str:
    """The version stamps ``hack/lib/version.sh`` writes; without them kubeadm sees a placeholder version."""
    version = VERSIONS["kubernetes"]
    major, minor = version.lstrip("v").split(".")[:2]
    built = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in (("gitVersion", version), ("gitMajor", major), ("gitMinor", minor),
                                                  ("gitCommit", "0" * 40), ("gitTreeState", "clean"),
                                                  ("buildDate", built))]
    return " ".join(flags)


def build_kubernetes(binaries: Sequence[str] = K8S_BINARIES) -> None:
    version = VERSIONS["kubernetes"]
    staging_version = "v0." + version.split(".", 1)[1]
    gomod = (module_dir("k8s.io/kubernetes", version) / "go.mod").read_text()
    staging = re.findall(r"^\s*(k8s\.io/\S+) => \./staging", gomod, re.M)
    src = _wrapper_module("k8s", "k8s.io/kubernetes", version, {m: staging_version for m in staging})
    run(("go", "build", "-trimpath", "-ldflags", _kubernetes_ldflags(), "-o", f"{BIN}/",
         *(f"k8s.io/kubernetes/cmd/{b}" for b in binaries)), cwd=src, env=GOENV)


def build_etcd() -> None:
    version = VERSIONS["etcd"]
    subs = ("go.etcd.io/etcd/api/v3", "go.etcd.io/etcd/client/pkg/v3", "go.etcd.io/etcd/client/v3",
            "go.etcd.io/etcd/pkg/v3")
    src = _wrapper_module("etcd", "go.etcd.io/etcd/server/v3", version, {m: version for m in subs})
    run(("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(BIN / "etcd"), "go.etcd.io/etcd/server/v3"),
        cwd=src, env=GOENV)


def build_coredns() -> None:
    run(("go", "install", "-trimpath", "-ldflags", "-s -w", f"github.com/coredns/coredns@{VERSIONS['coredns']}"),
        env={**GOENV, "GOBIN": str(BIN), "GOFLAGS": ""})


def build_kuberay() -> None:
    version = VERSIONS["kuberay"]
    src = module_dir("github.com/ray-project/kuberay/ray-operator", version)
    # The module's own go.mod is complete: build its main package inside a copy (the cache is read-only).
    work = CACHE / "src" / "kuberay"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work)
    for path in work.rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    run(("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(BIN / "kuberay-operator"), "."), cwd=work,
        env=GOENV)
    shutil.rmtree(work, ignore_errors=True)


def build_pause() -> None:
    pause_c = module_dir("k8s.io/kubernetes", VERSIONS["kubernetes"]) / "build" / "pause" / "linux" / "pause.c"
    BIN.mkdir(parents=True, exist_ok=True)
    run(("gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION={VERSIONS['kubernetes']}-serve-chaos", "-o",
         str(BIN / "pause"), str(pause_c)))
    run(("strip", str(BIN / "pause")))


# --- root file systems and images ----------------------------------------------------------------------------

def rootfs_tag(flavour: str) -> str:
    return f"serve-chaos/kind-rootfs-{flavour}:{VERSIONS['debian']}"


def build_rootfs(flavour: str, packages: Sequence[str]) -> None:
    """debootstrap a minbase root with ``packages``, trimmed as kind's ``clean-install`` trims, imported into
    Docker as ``serve-chaos/kind-rootfs-<flavour>``."""
    with tempfile.TemporaryDirectory(prefix=f"kind-rootfs-{flavour}-", dir=CACHE) as tmp:
        root = Path(tmp) / "root"
        run(("debootstrap", "--variant=minbase", f"--include={','.join(packages)}", VERSIONS["debian"], str(root),
             DEBIAN["mirror"]), timeout_s=1800)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                     "usr/share/locale", "var/log"):
            target = root / junk
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        tar = Path(tmp) / "root.tar"
        run(("tar", "--numeric-owner", "-C", str(root), "-cf", str(tar), "."), timeout_s=600)
        run(("docker", "import", "--change", f"LABEL {KIND_IMAGES_LABEL}=rootfs", str(tar), rootfs_tag(flavour)),
            timeout_s=600)


def docker_build(tag: str, dockerfile: str, files: dict[str, Path]) -> None:
    """``docker build`` from a context holding ``files`` (name in the context -> source path)."""
    with tempfile.TemporaryDirectory(prefix="kind-image-", dir=CACHE) as tmp:
        ctx = Path(tmp)
        for name, source in files.items():
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, ctx / name)
            else:
                shutil.copy2(source, ctx / name)
        (ctx / "Dockerfile").write_text(dockerfile + f'\nLABEL {KIND_IMAGES_LABEL}="{tag}"\n')
        run(("docker", "build", "--network", "none", "-t", tag, str(ctx)), timeout_s=1800)


def kubeadm_images() -> list[str]:
    """The images kubeadm's static pods and add-ons name (works offline), e.g. registry.k8s.io/etcd:3.6.4-0."""
    out = run((str(BIN / "kubeadm"), "config", "images", "list", "--kubernetes-version", VERSIONS["kubernetes"]),
              capture=True)
    return [line.strip() for line in out.splitlines() if line.strip()]


def kind_module() -> Path:
    return module_dir("sigs.k8s.io/kind", VERSIONS["kind"])


def sandbox_image() -> str:
    config = (kind_module() / "images" / "base" / "files" / "etc" / "containerd" / "config.toml").read_text()
    match = re.search(r'sandbox_image\s*=\s*"([^"]+)"', config)
    if not match:
        raise BuildError("kind's containerd config names no sandbox_image")
    return match.group(1)


def cni_image() -> str:
    return f"serve-chaos/kind-cni:{VERSIONS['kubernetes']}"


def component_tags() -> list[str]:
    tags = [t for t in kubeadm_images() if "/pause:" not in t]
    return [*tags, sandbox_image(), cni_image()]


def build_components() -> None:
    """One image per component: a static binary in an empty image (apiserver, controller manager, scheduler,
    etcd, CoreDNS, pause), or on the net root (kube-proxy, which calls iptables), tagged as kubeadm lists."""
    static = "FROM scratch\nENV PATH=/usr/local/bin:/usr/bin:/bin\n"
    for tag in kubeadm_images():
        name = tag.rsplit("/", 1)[1].split(":")[0]
        if name == "pause":
            continue
        if name == "kube-proxy":
            docker_build(tag, f"FROM {rootfs_tag('net')}\nCOPY kube-proxy /usr/local/bin/kube-proxy.real\n"
                         "COPY iptables-mode /usr/local/bin/kube-proxy\n",
                         {"kube-proxy": BIN / "kube-proxy", "iptables-mode": HERE / "iptables-mode"})
        elif name == "coredns":
            docker_build(tag, f"{static}COPY coredns /coredns\nENTRYPOINT [\"/coredns\"]\n",
                         {"coredns": BIN / "coredns"})
        elif name in ("etcd", *CONTROL_PLANE_IMAGES):
            docker_build(tag, f"{static}COPY {name} /usr/local/bin/{name}\n", {name: BIN / name})
        else:
            raise BuildError(f"kubeadm lists an image this builder does not know how to build: {tag}")
    docker_build(sandbox_image(), 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n',
                 {"pause": BIN / "pause"})
    docker_build(cni_image(), f"FROM {rootfs_tag('net')}\nCOPY cni-agent /usr/local/bin/cni-agent\n"
                 "COPY kubectl /usr/local/bin/kubectl\nENTRYPOINT [\"/usr/local/bin/cni-agent\"]\n",
                 {"cni-agent": HERE / "cni-agent", "kubectl": BIN / "kubectl"})


def build_base() -> None:
    """kind's base image (images/base/Dockerfile) on our debootstrap root: kind's own files, the services it
    enables and masks, CNI plugins where containerd looks, containerd's base OCI spec."""
    files = kind_module() / "images" / "base" / "files"
    script = r"""
set -eu
chmod 755 /kind /kind/bin
find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >> /etc/systemd/journald.conf
ln -sf /usr/lib/systemd/systemd /sbin/init
# Debian's containerd is /usr/bin/containerd; kind's unit starts /usr/local/bin/containerd
ln -sf /usr/bin/containerd /usr/local/bin/containerd
ln -sf /usr/bin/containerd-shim-runc-v2 /usr/local/bin/containerd-shim-runc-v2
ln -sf /usr/bin/ctr /usr/local/bin/ctr
mkdir -p /opt/cni/bin && for p in host-local loopback ptp portmap bridge; do ln -sf /usr/lib/cni/$p /opt/cni/bin/$p; done
ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json
rm -f /etc/systemd/system/containerd.service.d/* 2>/dev/null || true
systemctl enable kubelet.service containerd.service undo-mount-hacks.service
systemctl mask systemd-binfmt.service
mkdir -p /etc/kubernetes/manifests
sed -i 's/^OnBootSec=.*/OnBootSec=1min/' /usr/lib/systemd/system/systemd-tmpfiles-clean.timer || true
"""
    dockerfile = (f"FROM {rootfs_tag('node')}\nCOPY files/ /\nRUN chmod 755 /usr/local/bin/* /kind/bin/* && "
                  "rm -f /usr/sbin/policy-rc.d\n"
                  # containerd's runc shim finds `runc` on PATH: /usr/local/sbin comes before Debian's /usr/sbin
                  "COPY runc-shim /usr/local/sbin/runc\n"
                  f"COPY setup.sh /setup.sh\nRUN sh /setup.sh && rm /setup.sh\n"
                  "ENV container=docker\nSTOPSIGNAL SIGRTMIN+3\n"
                  'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]\n')
    with tempfile.TemporaryDirectory(prefix="kind-base-", dir=CACHE) as tmp:
        setup = Path(tmp) / "setup.sh"
        setup.write_text(script)
        docker_build(base_tag(), dockerfile, {"files": files, "setup.sh": setup, "runc-shim": BIN / "runc-shim"})


def base_tag() -> str:
    return f"serve-chaos/kind-base:{VERSIONS['kind']}-{VERSIONS['debian']}"


def default_cni_manifest() -> str:
    return (HERE / "cni.yaml").read_text().replace("@CNI_IMAGE@", cni_image())


def build_node() -> None:
    """The node image, as kind's ``pkg/build/nodeimage/buildcontext.go`` builds it: a container of the base
    image kept alive with ``sleep infinity``; kubeadm, kubelet and kubectl copied to /usr/bin; /kind/version;
    the default CNI manifest; every image imported into its containerd's k8s.io namespace and pinned; then
    ``docker commit`` with the entrypoint put back."""
    tag = SETTINGS.kind.node_image
    name = f"serve-chaos-kind-build-{os.getpid()}"
    run(("docker", "run", "-d", "--name", name, "--entrypoint=sleep", "--security-opt", "seccomp=unconfined",
         "--privileged", base_tag(), "infinity"))
    try:
        def node(*argv: str, stdin: bytes | None = None) -> str:
            return run(("docker", "exec", "-i", name, *argv), stdin=stdin, capture=True, timeout_s=1200)

        for binary in ("kubeadm", "kubelet", "kubectl"):
            run(("docker", "cp", str(BIN / binary), f"{name}:/usr/bin/{binary}"))
        node("chmod", "755", "/usr/bin/kubeadm", "/usr/bin/kubelet", "/usr/bin/kubectl")
        node("sh", "-c", f"mkdir -p /kind/manifests && printf %s {VERSIONS['kubernetes']} > /kind/version")
        node("sh", "-c", "cat > /kind/manifests/default-cni.yaml", stdin=default_cni_manifest().encode())
        node("sh", "-c", "mkdir -p /var/lib/containerd && (containerd >/var/log/containerd-build.log 2>&1 &) "
                         "&& for i in $(seq 1 100); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.1; done; "
                         "echo containerd did not start; cat /var/log/containerd-build.log; exit 1")
        for tag_ in component_tags():
            proc = subprocess.run(("docker", "save", tag_), capture_output=True)
            if proc.returncode != 0:
                raise BuildError(f"docker save {tag_}: {proc.stderr.decode(errors='replace')[-500:]}")
            node("ctr", "--namespace=k8s.io", "images", "import", "--all-platforms", "--no-unpack", "--digests", "-",
                 stdin=proc.stdout)
            node("ctr", "--namespace=k8s.io", "images", "label", _docker_ref(tag_), "io.cri-containerd.pinned=pinned")
        node("sh", "-c", "kill $(pidof containerd) && while pidof containerd >/dev/null; do sleep 0.1; done")
        run(("docker", "commit", "--change", 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]',
             "--change", f"LABEL {KIND_IMAGES_LABEL}=node", name, tag))
    finally:
        subprocess.run(("docker", "rm", "-f", "-v", name), capture_output=True)


def _docker_ref(tag: str) -> str:
    """The name containerd gives an image ``docker save``d as ``tag`` (docker.io/library/ for short names)."""
    name = tag
    first = tag.split("/", 1)[0]
    if "/" not in tag:
        name = f"docker.io/library/{tag}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{tag}"
    return name


def build_ray() -> None:
    """Ray's image: Debian's Python 3.11 (the harness's own) with ray[serve] at the version requirements.lock
    pins. The wheel set is downloaded on the host (its trust store, its index settings), with the lock as
    constraints, and installed in the image with no network and no index."""
    ray_version = ray_pin()
    wheels = CACHE / f"wheels-ray-{ray_version}"
    if not (wheels / ".complete").exists():
        shutil.rmtree(wheels, ignore_errors=True)
        run((sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
             "-d", str(wheels), "-c", str(ROOT / "requirements.lock"), f"ray[serve]=={ray_version}"), timeout_s=1800)
        (wheels / ".complete").write_text(ray_version)
    dockerfile = (f"FROM {rootfs_tag('ray')}\n"
                  "COPY wheels /tmp/wheels\n"
                  # into the system Python, not a venv: KubeRay starts Ray from a login shell (`bash -lc`), whose
                  # PATH is /etc/profile's, and probes and drivers call `ray` and `python` by name
                  "RUN pip install --no-cache-dir --disable-pip-version-check --break-system-packages --no-index "
                  f"--find-links /tmp/wheels 'ray[serve]=={ray_version}' && rm -rf /tmp/wheels\n"
                  "WORKDIR /root\n")
    docker_build(SETTINGS.kube.ray_image, dockerfile, {"wheels": wheels})


def ray_pin() -> str:
    match = re.search(r"^ray==(\S+)", (ROOT / "requirements.lock").read_text(), re.M)
    if not match:
        raise BuildError("requirements.lock pins no ray version")
    return match.group(1)


def build_redis() -> None:
    # as the official image's entrypoint does with a first argument ending in .conf: redis-server <file> <args>
    docker_build(SETTINGS.kube.redis_image, f"FROM {rootfs_tag('redis')}\nEXPOSE 6379\nWORKDIR /data\n"
                 'ENTRYPOINT ["redis-server"]\n', {})


def build_operator_image() -> None:
    docker_build(SETTINGS.kind.kuberay_image,
                 'FROM scratch\nCOPY kuberay-operator /manager\nUSER 65532:65532\nENTRYPOINT ["/manager"]\n',
                 {"kuberay-operator": BIN / "kuberay-operator"})


def operator_manifest_path() -> Path:
    return SETTINGS.kind.kuberay_manifest_path()


def build_operator_manifest() -> None:
    """KubeRay's CRDs, RBAC and Deployment: its module's ``config/default`` through kustomize (kubectl's own),
    in the operator namespace, with our image."""
    src = module_dir("github.com/ray-project/kuberay/ray-operator", VERSIONS["kuberay"]) / "config"
    namespace = SETTINGS.kube.operator_namespace
    repo, tag = SETTINGS.kind.kuberay_image.rsplit(":", 1)
    with tempfile.TemporaryDirectory(prefix="kind-kuberay-", dir=CACHE) as tmp:
        work = Path(tmp) / "config"
        shutil.copytree(src, work)
        overlay = work / "serve-chaos"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"namespace: {namespace}\nresources:\n- ../default\n"
            f"images:\n- name: quay.io/kuberay/operator\n  newName: {repo}\n  newTag: \"{tag}\"\n")
        rendered = run((str(BIN / "kubectl"), "kustomize", str(overlay)), capture=True)
    namespace_doc = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n---\n"
    rendered = rendered.replace("imagePullPolicy: Always", "imagePullPolicy: IfNotPresent")
    operator_manifest_path().parent.mkdir(parents=True, exist_ok=True)
    operator_manifest_path().write_text(namespace_doc + rendered)


def _static(*parts: str) -> Callable[[], str]:
    return lambda: hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def parts() -> list[Part]:
    v = VERSIONS
    recipe = _files_key(HERE / "images.toml", Path(__file__))
    return [
        Part("runc-shim", "runc-shim (Go, cluster/kind/runcshim)", lambda: _files_key(HERE / "runcshim" / "main.go"),
             _bins("runc-shim"), build_shim),
        Part("host", "Docker engine and debootstrap on this host", lambda: _files_key(HERE / "runcshim" / "main.go"),
             host_ready, build_host),
        Part("kind", f"kind {v['kind']} (go install)", _static(v["kind"]), _bins("kind"), build_kind),
        Part("kubernetes", f"Kubernetes {v['kubernetes']} binaries (wrapper module)", _static(v["kubernetes"]),
             _bins(*K8S_BINARIES), build_kubernetes),
        Part("apiserver", f"kube-apiserver {v['kubernetes']} alone (for make test's API tests)",
             _static(v["kubernetes"]), _bins("kube-apiserver"), lambda: build_kubernetes(("kube-apiserver",))),
        Part("etcd", f"etcd {v['etcd']}", _static(v["etcd"]), _bins("etcd"), build_etcd),
        Part("coredns", f"CoreDNS {v['coredns']}", _static(v["coredns"]), _bins("coredns"), build_coredns),
        Part("pause", "pause (gcc -static, Kubernetes' build/pause)", _static(v["kubernetes"]), _bins("pause"),
             build_pause),
        Part("kuberay", f"KubeRay operator {v['kuberay']}", _static(v["kuberay"]), _bins("kuberay-operator"),
             build_kuberay),
        Part("rootfs-node", "node root (debootstrap)", _static(v["debian"], *DEBIAN["node_packages"]),
             _images(rootfs_tag("node")), lambda: build_rootfs("node", DEBIAN["node_packages"])),
        Part("rootfs-net", "net root (debootstrap)", _static(v["debian"], *DEBIAN["net_packages"]),
             _images(rootfs_tag("net")), lambda: build_rootfs("net", DEBIAN["net_packages"])),
        Part("rootfs-ray", "Ray's root (debootstrap)", _static(v["debian"], *DEBIAN["ray_packages"]),
             _images(rootfs_tag("ray")), lambda: build_rootfs("ray", DEBIAN["ray_packages"])),
        Part("rootfs-redis", "Redis's root (debootstrap)", _static(v["debian"], *DEBIAN["redis_packages"]),
             _images(rootfs_tag("redis")), lambda: build_rootfs("redis", DEBIAN["redis_packages"])),
        Part("components", "control-plane, pause and CNI images",
             lambda: _files_key(HERE / "cni-agent", HERE / "iptables-mode") + recipe, lambda: _images(*component_tags())(), build_components),
        Part("base", "kind base image", lambda: recipe + _files_key(HERE / "runcshim" / "main.go"), _images(base_tag()),
             build_base),
        Part("node", f"kind node image {SETTINGS.kind.node_image}",
             lambda: recipe + _files_key(HERE / "cni.yaml", HERE / "cni-agent", HERE / "runcshim" / "main.go"),
             _images(SETTINGS.kind.node_image),
             build_node),
        Part("ray", f"Ray image {SETTINGS.kube.ray_image}", lambda: _files_key(ROOT / "requirements.lock") + recipe,
             _images(SETTINGS.kube.ray_image), build_ray),
        Part("redis", f"Redis image {SETTINGS.kube.redis_image}", lambda: recipe,
             _images(SETTINGS.kube.redis_image), build_redis),
        Part("operator-image", f"KubeRay operator image {SETTINGS.kind.kuberay_image}", _static(v["kuberay"]),
             _images(SETTINGS.kind.kuberay_image), build_operator_image),
        Part("operator-manifest", "KubeRay CRDs and Deployment", lambda: recipe,
             lambda: operator_manifest_path().is_file(), build_operator_manifest),
    ]


# --- driver --------------------------------------------------------------------------------------------------

def _stamp(part: Part) -> Path:
    return CACHE / "stamps" / f"{part.name}.key"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=(), metavar="PART", help="build only these parts")
    parser.add_argument("--force", nargs="+", default=(), metavar="PART", help="rebuild these parts")
    parser.add_argument("--list", action="store_true", help="list the parts and whether each is cached")
    args = parser.parse_args(argv)
    all_parts = parts()
    names = [p.name for p in all_parts]
    for name in (*args.only, *args.force):
        if name not in names:
            parser.error(f"no part {name!r}; the parts are {', '.join(names)}")
    CACHE.mkdir(parents=True, exist_ok=True)
    times_path = CACHE / "build-times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    selected = [p for p in all_parts if not args.only or p.name in args.only]
    started = time.monotonic()
    for index, part in enumerate(selected, 1):
        key = part.key()
        stamp = _stamp(part)
        cached = part.name not in args.force and part.done() and stamp.is_file() and stamp.read_text() == key
        if args.list:
            log(f"{part.name:18} {'cached' if cached else 'to build'}  {part.what}")
            continue
        if cached:
            log(f"[{index}/{len(selected)}] {part.what}: cached (built in {times.get(part.name, '?')} s)")
            continue
        log(f"[{index}/{len(selected)}] {part.what}: building ...")
        t0 = time.monotonic()
        try:
            part.build()
        except (BuildError, WaitTimeout, subprocess.TimeoutExpired) as exc:
            log(f"[{index}/{len(selected)}] {part.what}: FAILED after {time.monotonic() - t0:.1f} s\n{exc}")
            return 1
        elapsed = round(time.monotonic() - t0, 1)
        times[part.name] = elapsed
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(key)
        times_path.write_text(json.dumps(times, indent=1, sort_keys=True))
        log(f"[{index}/{len(selected)}] {part.what}: built in {elapsed} s")
    if not args.list:
        log(f"all {len(selected)} parts ready in {time.monotonic() - started:.1f} s (cache {CACHE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

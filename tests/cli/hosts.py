"""Two (or more) hosts on this machine for the cluster tests: Linux network namespaces joined by
a bridge, and Open MPI launched across them over TCP only.

``Hosts(n)`` makes namespaces ``cnt<pid>_h1 .. _hn``, each with one end of a veth pair at
10.213.7.i/24; the other ends join a bridge in the root namespace at 10.213.7.254, where mpirun
runs. ``hosts.mpirun(np, *args, map_by=..., env=...)`` starts a job over them with a hostfile
(``slots=``), tests/hosts/agent as the launch agent (it enters the namespace and gives the
host its own hostname, hN), and ``--mca btl tcp,self`` with TCP restricted to the test subnet,
so nothing goes through shared memory and no traffic leaves these addresses. ``close()``
removes everything; it runs at exit and on SIGTERM too, and a new ``Hosts`` first removes what
a killed earlier session left behind (namespaces of processes that no longer exist).

Needs root (network namespaces) and iproute2 / util-linux's ``unshare``. ``HostsUnavailable``
says why they could not be made. The hosts share this machine's filesystem and mpirun's
environment, so a missing ``-x`` or an unshared run directory would not show here.
"""
import atexit
import os
import re
import signal
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AGENT = os.path.join(ROOT, "tests", "hosts", "agent")
SUBNET = "10.213.7"
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class HostsUnavailable(Exception):
    pass


def _ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise HostsUnavailable(f"'ip {' '.join(args)}' failed: {r.stderr.strip()}")
    return r


def _kill_inside(ns):
    """Every process still in namespace ns (a job a failed test left running)."""
    for pid in _ip("netns", "pids", ns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def _remove_stale():
    """Namespaces, bridges and veth ends of earlier sessions whose process is gone."""
    for name in _ip("netns", "list", check=False).stdout.split():
        m = re.fullmatch(r"cnt(\d+)_h\d+", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            _kill_inside(name)
            _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        m = re.search(r"\d+: (cnt(\d+)(b|v\d+b))[:@]", line)
        if m and not os.path.exists(f"/proc/{m.group(2)}"):
            _ip("link", "del", m.group(1), check=False)


class Hosts:
    def __init__(self, n=2):
        if os.geteuid() != 0:
            raise HostsUnavailable("network namespaces need root (CI runs the tests as root)")
        for tool in ("ip", "unshare", "mpirun"):
            if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
                raise HostsUnavailable(f"'{tool}' is not installed")
        _remove_stale()
        if SUBNET + "." in _ip("-o", "addr", check=False).stdout:
            raise HostsUnavailable(f"the test subnet {SUBNET}.0/24 is already in use here")
        self.prefix = f"cnt{os.getpid()}"
        self.bridge = f"{self.prefix}b"
        self.n = n
        self.made = []
        atexit.register(self.close)
        self._old_term = signal.signal(signal.SIGTERM, self._on_term)
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _on_term(self, signum, frame):
        """A SIGTERM (a CI timeout) ends the session: clean up, then die of it as before."""
        self.close()
        signal.signal(signal.SIGTERM, self._old_term)
        os.kill(os.getpid(), signal.SIGTERM)

    def _make(self):
        _ip("link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", self.bridge))
        _ip("addr", "add", f"{SUBNET}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(1, self.n + 1):
            ns, a, b = f"{self.prefix}_h{i}", f"{self.prefix}v{i}a", f"{self.prefix}v{i}b"
            _ip("netns", "add", ns)
            self.made.append(("netns", ns))
            _ip("link", "add", a, "type", "veth", "peer", "name", b)
            self.made.append(("link", b))
            _ip("link", "set", a, "netns", ns)
            _ip("link", "set", b, "master", self.bridge)
            _ip("link", "set", b, "up")
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", a)
            _ip("-n", ns, "link", "set", a, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def close(self):
        """Kills what still runs on the hosts, then removes them (idempotent)."""
        while self.made:
            kind, name = self.made.pop()
            if kind == "netns":
                _kill_inside(name)
                _ip("netns", "del", name, check=False)
            else:
                _ip("link", "del", name, check=False)
        if signal.getsignal(signal.SIGTERM) == self._on_term:
            signal.signal(signal.SIGTERM, self._old_term)

    def hostfile(self, path, slots=2):
        with open(path, "w") as f:
            for i in range(1, self.n + 1):
                f.write(f"{SUBNET}.{i} slots={slots}\n")
        return path

    def mpirun(self, tmp_path, np_, *args, map_by="ppr:2:node", env=None, timeout=300,
               popen=False, mca=()):
        """mpirun over the hosts; returns the CompletedProcess (or the Popen with popen).
        mca: more (name, value) pairs."""
        hostfile = self.hostfile(os.path.join(str(tmp_path), "hostfile"))
        e = dict(os.environ, **MPI_ENV, CANARY_NETNS_PREFIX=self.prefix)
        if env:
            e.update(env)
        # --bind-to none: every "host" is this machine, and each would bind its first rank to
        # core 0 of the same two cores; yield when idle, as 4 ranks share 2 cores; pml ob1 so
        # that btl tcp,self is what moves the data (UCX would take a fabric, or shared memory)
        cmd = ["mpirun", "--hostfile", hostfile, "-np", str(np_), "--map-by", map_by,
               "--bind-to", "none", "--mca", "mpi_yield_when_idle", "1",
               "--mca", "plm_rsh_agent", AGENT, "--mca", "pml", "ob1",
               "--mca", "btl", "tcp,self",
               "--mca", "oob_tcp_if_include", f"{SUBNET}.0/24",
               "--mca", "btl_tcp_if_include", f"{SUBNET}.0/24"]
        for name, value in mca:
            cmd += ["--mca", name, str(value)]
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CANARY_FAULT"):
            if k in e:
                cmd += ["-x", k]
        cmd += list(args)
        if popen:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=e)
        return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)

//! A hostile agent inside the pod topology (`idagent run --topology pod`): real containers on
//! a Docker network of the test's own, fake upstreams in a service container's network
//! namespace on it. Checks what the issue demands of the pod: `idagent proxy` holds no
//! capability, the agent container none, and a guest in it cannot reach the pod's real
//! interface — the escape tests of the Docker mode pass there too. Judged from the host
//! (`/proc/<pid>/status` of the containers' processes), by the fakes and canary sockets in the
//! service namespace (nothing may arrive), and by the audit log.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `docker ARGS`; its trimmed stdout, or a panic with its stderr.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Host interfaces (names) and named network namespaces, to compare before and after.
fn host_links() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

fn host_netns() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A socket the test binds in the service namespace: anything the agent gets through to it
/// is left pending (a queued connection, a datagram) and found by [`Canary::received`].
struct Canary {
    tcp: std::net::TcpListener,
    udp: std::net::UdpSocket,
}

impl Canary {
    fn bind(netns: &str, ip: IpAddr) -> Canary {
        let ns = netns.to_owned();
        std::thread::spawn(move || {
            // A socket stays in the namespace it was made in; only this thread joins it.
            let file = std::fs::File::open(&ns).expect("open service netns");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let tcp = std::net::TcpListener::bind((ip, 0)).expect("canary tcp");
            let udp = std::net::UdpSocket::bind((ip, 0)).expect("canary udp");
            tcp.set_nonblocking(true).expect("nonblocking");
            udp.set_nonblocking(true).expect("nonblocking");
            Canary { tcp, udp }
        })
        .join()
        .expect("canary thread")
    }
    fn tcp_port(&self) -> u16 {
        self.tcp.local_addr().expect("addr").port()
    }
    fn udp_port(&self) -> u16 {
        self.udp.local_addr().expect("addr").port()
    }
    /// What reached it: connections accepted and datagrams received.
    fn received(&self) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok((_, peer)) = self.tcp.accept() {
            got.push(format!("tcp connection from {peer}"));
        }
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = self.udp.recv_from(&mut buf) {
            got.push(format!(
                "udp {:?} from {peer}",
                String::from_utf8_lossy(&buf[..n])
            ));
        }
        got
    }
}

/// The test's cluster: an internal Docker network, a service container on it (`idagent
/// pause`) and the fakes plus a canary in that container's network namespace. Removed on
/// Drop; [`PodNet::teardown`] removes and then checks that nothing of it is left on the host.
struct PodNet {
    name: String,
    service: String,
    ip: IpAddr,
    fakes: Option<idagent_fakes::FakesHandle>,
    canary: Canary,
    links_before: BTreeSet<String>,
    netns_before: String,
    _dir: tempfile::TempDir,
    removed: bool,
}

impl PodNet {
    fn new() -> PodNet {
        ensure_image();
        let links_before = host_links();
        let netns_before = host_netns();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "idagent-test-{}-{}-{nanos:x}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        docker(&[
            "network",
            "create",
            "--internal",
            // Not `idagent=1` either: `idagent gc` (and every audit) removes such networks
            // whose owner is no live idagent process.
            "--label",
            "idagent-test=1",
            &name,
        ]);
        // Not labelled `idagent=1`: `idagent run` removes every container with that label
        // whose owner is no live idagent process (its leftover sweep), and the test owns this
        // one.
        let bind = format!("{IDAGENT}:/.idagent/bin/idagent:ro");
        let service = Command::new("docker")
            .args(["run", "-d", "--label", "idagent-test=1", "--network", &name])
            .args(["-v", &bind, GUEST_IMAGE, "/.idagent/bin/idagent", "pause"])
            .output()
            .expect("docker run");
        let service_id = String::from_utf8_lossy(&service.stdout).trim().to_owned();
        if !service.status.success() || service_id.is_empty() {
            let _ = Command::new("docker")
                .args(["network", "rm", &name])
                .output();
            panic!(
                "service container: {}",
                String::from_utf8_lossy(&service.stderr)
            );
        }
        let inspect = docker(&[
            "inspect",
            "-f",
            &format!(
                "{{{{.State.Pid}}}} {{{{(index .NetworkSettings.Networks \"{name}\").IPAddress}}}}"
            ),
            &service_id,
        ]);
        let (pid, ip) = inspect.split_once(' ').expect("pid and ip");
        let ip: IpAddr = ip.parse().expect("service ip");
        let netns = format!("/proc/{pid}/ns/net");
        let dir = tempfile::tempdir().expect("tempdir");
        let canary = Canary::bind(&netns, ip);
        let fakes = idagent_fakes::start_blocking_on(
            &dir.path().join("fakes"),
            idagent_fakes::Listen {
                ip,
                netns: Some(netns.into()),
            },
        )
        .expect("fakes in the service namespace");
        PodNet {
            name,
            service: service_id,
            ip,
            fakes: Some(fakes),
            canary,
            links_before,
            netns_before,
            _dir: dir,
            removed: false,
        }
    }

    fn fakes(&self) -> &idagent_fakes::FakesHandle {
        self.fakes.as_ref().expect("fakes running")
    }

    /// `--topology pod --pod-network NET --offline <fakes' map and CA>`.
    fn pod_args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "--topology",
            "pod",
            "--pod-network",
            &self.name,
            "--offline",
        ]
        .map(str::to_owned)
        .to_vec();
        a.extend(self.fakes().idagent_args());
        a
    }

    /// `idagent run <pod args> EXTRA --image GUEST_IMAGE -- python3 -c SCRIPT ARGS...`, with
    /// the common checks (log invariants, no container, control folder or TUN left).
    fn python(&self, extra: &[&str], script: &str, script_args: &[&str]) -> Run {
        let mut args = self.pod_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--image", GUEST_IMAGE, "--", "python3", "-c", script].map(str::to_owned));
        args.extend(script_args.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        idagent_run(&args)
    }

    /// The bridge Docker made for the network on the host.
    fn bridge(&self) -> String {
        let id = docker(&["network", "inspect", "-f", "{{.Id}}", &self.name]);
        format!("br-{}", &id[..12])
    }

    fn remove(&mut self) {
        if std::mem::replace(&mut self.removed, true) {
            return;
        }
        if let Some(f) = self.fakes.take() {
            f.shutdown();
        }
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.service])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }

    /// Removes everything and checks the host is as before: no container of the test's, no
    /// network, no interface of it (its bridge, the veths on it, a TUN), no network namespace.
    fn teardown(mut self) {
        let bridge = self.bridge();
        let veths = Command::new("ip")
            .args(["-o", "link", "show", "master", &bridge])
            .output()
            .expect("ip link master");
        let ours: Vec<String> = String::from_utf8_lossy(&veths.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect();
        self.remove();
        assert!(
            !docker_ok(&["network", "inspect", &self.name]),
            "network {} left behind",
            self.name
        );
        assert!(
            !docker_ok(&["container", "inspect", &self.service]),
            "service container left behind"
        );
        let left = docker(&["ps", "-aq", "--filter", &format!("network={}", self.name)]);
        assert!(left.is_empty(), "containers on {} left: {left}", self.name);
        // Other sessions may start containers meanwhile: only the test's own interfaces are
        // judged, plus any new TUN.
        let now = host_links();
        assert!(!now.contains(&bridge), "bridge {bridge} left on the host");
        for v in &ours {
            assert!(!now.contains(v), "veth {v} of the test left on the host");
        }
        for new in now.difference(&self.links_before) {
            assert!(!new.starts_with("tun"), "a TUN {new} appeared on the host");
        }
        assert_eq!(host_netns(), self.netns_before, "named netns changed");
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `/proc/<pid>/status` fields of interest.
#[derive(Debug)]
struct Status {
    uid: Vec<u32>,
    cap_eff: u64,
    cap_prm: u64,
    cap_amb: u64,
    cap_bnd: u64,
    no_new_privs: u32,
    name: String,
}

fn status_of(path: &str) -> Option<Status> {
    let text = std::fs::read_to_string(path).ok()?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
    };
    let hex = |k: &str| field(k).and_then(|v| u64::from_str_radix(&v, 16).ok());
    Some(Status {
        uid: field("Uid:")?
            .split_whitespace()
            .filter_map(|u| u.parse().ok())
            .collect(),
        cap_eff: hex("CapEff:")?,
        cap_prm: hex("CapPrm:")?,
        cap_amb: hex("CapAmb:")?,
        cap_bnd: hex("CapBnd:")?,
        no_new_privs: field("NoNewPrivs:")?.parse().ok()?,
        name: field("Name:")?,
    })
}

/// Every thread of `pid` and of its descendants, read now (the run is over by the time the
/// assertions run): `(pid, status path, status)`.
fn task_statuses(pid: u32) -> Vec<(u32, String, Status)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let path = t.path().join("status").display().to_string();
            // A thread that ended between the listing and the read has nothing to judge.
            if let Some(status) = status_of(&path) {
                out.push((p, path, status));
            }
            if let Ok(children) = std::fs::read_to_string(t.path().join("children")) {
                todo.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

/// The run id of the pod on `net`, from its holder's label, once it exists.
fn pod_run_id(net: &str, deadline: Instant) -> String {
    loop {
        let id = docker(&[
            "ps",
            "--filter",
            &format!("network={net}"),
            "--filter",
            "label=idagent.pod-role=holder",
            "--format",
            "{{.Label \"idagent.run\"}}",
        ]);
        if !id.is_empty() {
            return id;
        }
        assert!(Instant::now() < deadline, "no pod holder on {net}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The host pid of the running container of `role` in run `run`.
fn role_pid(run: &str, role: &str, deadline: Instant) -> u32 {
    loop {
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=idagent.run={run}"),
            "--filter",
            &format!("label=idagent.pod-role={role}"),
        ]);
        if let Some(id) = ids.lines().next() {
            let pid = docker(&["inspect", "-f", "{{.State.Pid}}", id]);
            if let Ok(pid) = pid.parse::<u32>() {
                if pid > 0 {
                    return pid;
                }
            }
        }
        assert!(Instant::now() < deadline, "no running {role} in run {run}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const CAPS_GUEST: &str = r#"
import json, time
st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
r = {k: st[k].strip() for k in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Uid"]}
print("RESULT " + json.dumps(r), flush=True)
time.sleep(4)
"#;

const AGENT_UID: u32 = 4242;

/// While a pod agent runs, its proxy and agent processes hold no capability (effective,
/// permitted, ambient: 0) and cannot gain one (no_new_privs); the proxy runs as 7700, the
/// agent as the uid given; the net-init container (the only one with NET_ADMIN) is gone.
#[test]
fn the_proxy_and_the_agent_hold_no_capability_and_net_init_is_gone() {
    let net = PodNet::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let run_dir = tmp.path().join("run");
    let mut args = net.pod_args();
    let user = format!("{AGENT_UID}:{AGENT_UID}");
    args.extend(
        [
            "--user",
            &user,
            "--image",
            GUEST_IMAGE,
            "--",
            "python3",
            "-c",
            CAPS_GUEST,
        ]
        .map(str::to_owned),
    );
    let child = Command::new(IDAGENT)
        .arg("run")
        .arg("--run-dir")
        .arg(&run_dir)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start idagent");
    let deadline = Instant::now() + Duration::from_secs(60);
    let run_id = pod_run_id(&net.name, deadline);
    let proxy = role_pid(&run_id, "proxy", deadline);
    let agent = role_pid(&run_id, "agent", deadline);
    let holder = role_pid(&run_id, "holder", deadline);
    // The command (python) is a child of the agent's init; wait until it is there.
    let agent_tasks = loop {
        let tasks = task_statuses(agent);
        let python = tasks.iter().any(|(_, _, s)| s.name.starts_with("python"));
        if python {
            break tasks;
        }
        assert!(
            Instant::now() < deadline,
            "the agent's command never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let net_init = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=idagent.run={run_id}"),
        "--filter",
        "label=idagent.pod-role=net-init",
    ]);
    let proxy_tasks = task_statuses(proxy);
    let holder_tasks = task_statuses(holder);
    let out = child.wait_with_output().expect("wait for idagent");
    let events = read_audit(&run_dir.join("audit.jsonl"));
    let run = Run {
        dir: tmp,
        out,
        events,
    };
    check_audit_invariants(&run);
    assert_no_leftovers(&run.run_id());
    assert_eq!(run.run_id(), run_id);
    assert_eq!(run.code(), Some(0), "{}", run.explain());

    assert!(
        net_init.is_empty(),
        "the net-init container still exists while the agent runs: {net_init}"
    );
    let check = |role: &str, tasks: &[(u32, String, Status)], uid: u32| {
        assert!(!tasks.is_empty(), "no {role} task could be read");
        for (pid, path, s) in tasks {
            let what = format!("{role} pid {pid} ({}) {path}: {s:?}", s.name);
            assert_eq!(s.cap_eff, 0, "{what}");
            assert_eq!(s.cap_prm, 0, "{what}");
            assert_eq!(s.cap_amb, 0, "{what}");
            assert_eq!(s.no_new_privs, 1, "{what}");
            assert!(
                s.uid.len() == 4 && s.uid.iter().all(|&u| u == uid),
                "{what}"
            );
        }
    };
    check("proxy", &proxy_tasks, 7700);
    check("agent", &agent_tasks, AGENT_UID);
    check("holder", &holder_tasks, 65534);
    // The bounding set too: nothing to regain even through a setuid binary.
    for (_, path, s) in proxy_tasks.iter().chain(&agent_tasks) {
        assert_eq!(s.cap_bnd, 0, "{path}: {s:?}");
    }
    // The agent's init and its command are both there (and so were judged).
    assert!(agent_tasks.iter().any(|(p, _, _)| *p == agent));
    assert!(agent_tasks.iter().any(|(p, _, _)| *p != agent));
    // What the agent's command saw of itself agrees.
    let got = run.result();
    for k in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(got[k], "0000000000000000", "{k}: {}", run.explain());
    }
    assert_eq!(got["NoNewPrivs"], "1");
    let uid = AGENT_UID.to_string();
    assert_eq!(
        got["Uid"]
            .as_str()
            .map(|u| u.split_whitespace().collect::<Vec<_>>()),
        Some(vec![uid.as_str(); 4])
    );
    assert!(net.fakes().requests().is_empty());
    net.teardown();
}

/// The escape attempts of the Docker mode, from inside the pod: the pod's real interface
/// (eth0, on the test's network) must stay out of reach. Arguments: the service IP, the
/// fake's port, the canary's TCP and UDP ports.
const ESCAPE: &str = r#"
import errno, json, os, socket, subprocess, sys
SVC, PORT, CTCP, CUDP = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = {}
def err(e):
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__
# (b) TCP bound to eth0 (SO_BINDTODEVICE needs no privilege since Linux 5.7): to the fake
# and to the canary.
for name, port in [("bind_fake", PORT), ("bind_canary", CTCP)]:
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
        s.settimeout(2)
        s.connect((SVC, port))
        s.sendall(b"GET /escape HTTP/1.1\r\nHost: www.google.com\r\n\r\n")
        r[name] = "connected"
    except Exception as e:
        r[name] = err(e)
# (c) a UDP datagram to the service via eth0.
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
    u.sendto(b"udp-escape", (SVC, CUDP))
    r["udp_eth0"] = "sent"
except Exception as e:
    r["udp_eth0"] = err(e)
# (d) raw and packet sockets.
for name, args in [("raw", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)),
                   ("packet", (socket.AF_PACKET, socket.SOCK_RAW, 0x0300))]:
    try:
        socket.socket(*args).close()
        r[name] = "opened"
    except Exception as e:
        r[name] = err(e)
# (e) routing and firewall, with the image's own tools.
for name, argv in [("route", ["ip", "route", "replace", "default", "dev", "eth0"]),
                   ("rule", ["ip", "rule", "del", "pref", "100"]),
                   ("iptables", ["iptables", "-F"]),
                   ("mangle", ["iptables", "-t", "mangle", "-F"])]:
    p = subprocess.run(argv, capture_output=True, text=True)
    r[name] = p.returncode
r["rules_after"] = subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
r["routes_after"] = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
# (f) the TUN device.
try:
    open("/dev/net/tun", "r+b").close()
    r["tun"] = "opened"
except Exception as e:
    r["tun"] = err(e)
# (g) the control volume.
r["ctl_sock"] = os.path.exists("/.idagent/ctl/ctl.sock")
r["events_sock"] = os.path.exists("/.idagent/ctl/events.sock")
try:
    with open("/.idagent/ctl/forged", "w") as f:
        f.write("x")
    r["ctl_write"] = "ok"
except Exception as e:
    r["ctl_write"] = err(e)
# (h) the pid namespace: what is visible, then kill everything that is.
procs = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            procs[p] = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")[0:3]
            procs[p] = [a.decode() for a in procs[p]]
        except Exception:
            pass
r["procs"] = procs
r["me"] = str(os.getpid())
print("RESULT " + json.dumps(r), flush=True)
try:
    os.kill(-1, 9)
    r["kill"] = "ok"
except Exception as e:
    r["kill"] = err(e)
print("KILL " + r["kill"], flush=True)
"#;

#[test]
fn the_pods_real_interface_is_out_of_the_agents_reach() {
    let net = PodNet::new();
    let fake = net.fakes().addr(idagent_fakes::FakeServer::GoogleHttp);
    let (ip, port) = (net.ip.to_string(), fake.port().to_string());
    let (ctcp, cudp) = (
        net.canary.tcp_port().to_string(),
        net.canary.udp_port().to_string(),
    );
    let run = net.python(&[], ESCAPE, &[&ip, &port, &ctcp, &cudp]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let r = run.result();
    let ctx = run.explain();
    // (b) Dropped by the pod firewall: the SYN never leaves (timeout), or the send fails.
    for k in ["bind_fake", "bind_canary"] {
        assert!(
            r[k] == "TimeoutError" || r[k] == "EPERM",
            "{k}: {}\n{ctx}",
            r[k]
        );
    }
    // (c) The firewall's DROP fails a datagram's send at once.
    assert_eq!(r["udp_eth0"], "EPERM", "{ctx}");
    // (d)
    assert_eq!(r["raw"], "EPERM", "{ctx}");
    assert_eq!(r["packet"], "EPERM", "{ctx}");
    // (e) Every change is refused, and the tables are as net-init left them.
    for k in ["route", "rule", "iptables", "mangle"] {
        assert!(
            r[k].as_i64().is_some_and(|c| c != 0),
            "{k} succeeded\n{ctx}"
        );
    }
    let rules = r["rules_after"].as_str().unwrap_or_default();
    assert!(
        rules.contains("100:\tfrom all fwmark 0x1d4 lookup 77")
            && rules.contains("uidrange 7700-7700 lookup 78"),
        "{rules}"
    );
    let routes = r["routes_after"].as_str().unwrap_or_default();
    assert!(routes.starts_with("default dev tun0"), "{routes}");
    // (f) The agent has no TUN device node at all.
    assert_ne!(r["tun"], "opened", "{ctx}");
    // (g) The sockets were unlinked before the command started; the volume is read-only.
    assert_eq!(r["ctl_sock"], false, "{ctx}");
    assert_eq!(r["events_sock"], false, "{ctx}");
    assert_eq!(r["ctl_write"], "EROFS", "{ctx}");
    // (h) Its own pid namespace: only init and the command itself; kill(-1) finds nobody
    // else to signal.
    let procs = r["procs"].as_object().expect("procs");
    let me = r["me"].as_str().unwrap_or_default();
    let pids: BTreeSet<&str> = procs.keys().map(String::as_str).collect();
    assert_eq!(pids, BTreeSet::from(["1", me]), "{ctx}");
    assert_eq!(procs["1"][1], "guest-init", "{ctx}");
    for argv in procs.values() {
        assert!(
            !argv.to_string().contains("proxy") && !argv.to_string().contains("pause"),
            "{argv}"
        );
    }
    assert!(run.stdout().contains("KILL ESRCH"), "{ctx}");
    // The run ended as it should, with the complete log (check_audit_invariants: run_end
    // last, no seq hole).
    let end = run.events.last().expect("run_end");
    assert_eq!(end["reason"], "exited", "{ctx}");
    assert_eq!(end["exit_code"], 0, "{ctx}");
    // Nothing arrived in the service namespace.
    assert!(
        net.fakes().requests().is_empty(),
        "{:?}",
        net.fakes().requests()
    );
    assert_eq!(net.canary.received(), Vec::<String>::new());
    net.teardown();
}

/// A plain connect and a plain datagram to the service's real address, arguments as ESCAPE.
const PLAIN: &str = r#"
import json, socket, sys
SVC, PORT, CUDP = sys.argv[1], int(sys.argv[2]), int(sys.argv[4])
r = {}
try:
    s = socket.create_connection((SVC, PORT), timeout=2)
    s.sendall(b"GET /plain HTTP/1.1\r\nHost: www.google.com\r\nConnection: close\r\n\r\n")
    s.settimeout(2)
    r["tcp"] = s.recv(200).decode(errors="replace")
except Exception as e:
    r["tcp"] = type(e).__name__ + ": " + str(e)
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"udp-plain", (SVC, CUDP))
    r["udp"] = "sent"
except Exception as e:
    r["udp"] = type(e).__name__ + ": " + str(e)
print("RESULT " + json.dumps(r), flush=True)
"#;

/// (a) Without tricks, traffic to the pod's own subnet is marked for the TUN like everything
/// else (`guest/pod-netfilter.rules`: "the pod's own subnet and DNS included"): it ends in
/// idagent's stack, on record, refused offline as an unmapped address — never at the fake.
///
/// Fails on the rules as of this test's writing, for two reasons found here: (1) the filter
/// table's OUTPUT chain matches `-o` against the device of the route looked up before the
/// mangle mark rerouted the packet (eth0 for the pod's subnet), so `-o tun0 -j ACCEPT` never
/// matches such a packet and it is dropped unrecorded; (2) with that judged in POSTROUTING
/// instead, the packet does reach the TUN but with eth0's source address, and the stack drops
/// it (counted in `tun_packets_dropped`, no record) — it needs the guest's source address.
#[test]
fn a_plain_connect_to_the_service_ip_ends_in_idagents_stack() {
    let net = PodNet::new();
    let fake = net.fakes().addr(idagent_fakes::FakeServer::GoogleHttp);
    let (ip, port) = (net.ip.to_string(), fake.port().to_string());
    let (ctcp, cudp) = (
        net.canary.tcp_port().to_string(),
        net.canary.udp_port().to_string(),
    );
    let run = net.python(&[], PLAIN, &[&ip, &port, &ctcp, &cudp]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    // Never at the fake, never at the canary, whatever else happens.
    assert!(
        net.fakes().requests().is_empty(),
        "{:?}",
        net.fakes().requests()
    );
    assert_eq!(net.canary.received(), Vec::<String>::new());
    let ctx = run.explain();
    let tcp_dst = format!("{ip}:{port}");
    let udp_dst = format!("{ip}:{cudp}");
    assert!(
        run.of_kind("tcp").any(|e| e["dst"] == tcp_dst.as_str()),
        "no tcp record for {tcp_dst}: the connect never reached idagent's stack\n{ctx}"
    );
    let blocked = |what: &str, dst: &str| {
        run.of_kind("blocked").any(|e| {
            e["what"] == what
                && e["target"].as_str().is_some_and(|t| t.contains(dst))
                && e["reason"].as_str().is_some_and(|r| r.contains("offline"))
        })
    };
    assert!(
        blocked("tcp", &tcp_dst),
        "tcp to {tcp_dst} not blocked\n{ctx}"
    );
    assert!(
        blocked("udp", &udp_dst),
        "udp to {udp_dst} not blocked\n{ctx}"
    );
    // The guest got idagent's answer, as in the Docker mode.
    let r = run.result();
    assert!(
        r["tcp"]
            .as_str()
            .is_some_and(|t| t.starts_with("HTTP/1.1 502")),
        "{ctx}"
    );
    assert_eq!(r["udp"], "sent", "{ctx}");
    net.teardown();
}

const FILES: &str = r#"
import errno, json
with open("/tmp/workspace/x", "w") as f:
    f.write("hello from the pod\n")
r = {}
for p in ["/etc/x", "/usr/x", "/x", "/tmp/x", "/.idagent/x"]:
    try:
        with open(p, "w") as f:
            f.write("escape")
        r[p] = "ok"
    except OSError as e:
        r[p] = errno.errorcode[e.errno]
print("RESULT " + json.dumps(r))
"#;

/// As in the Docker mode: writes outside /tmp/workspace fail with EROFS and are logged as
/// denied `file` records; a write inside is logged with its sha256 and its writer.
#[test]
fn pod_writes_outside_the_workspace_fail_and_inside_are_hashed() {
    let net = PodNet::new();
    let run = net.python(&[], FILES, &[]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let r = run.result();
    let ctx = run.explain();
    let outside = ["/etc/x", "/usr/x", "/x", "/tmp/x", "/.idagent/x"];
    for p in outside {
        assert_eq!(r[p], "EROFS", "{p}\n{ctx}");
        assert!(
            run.of_kind("file")
                .any(|e| e["path"] == p && e["outcome"] == "denied" && e["errno"] == "EROFS"),
            "{p} not logged as denied\n{ctx}"
        );
    }
    let data = b"hello from the pod\n";
    let created = run
        .of_kind("file")
        .find(|e| e["path"] == "/tmp/workspace/x" && e["outcome"] == "ok")
        .unwrap_or_else(|| panic!("no workspace record\n{ctx}"));
    assert_eq!(created["sha256"], sha256_hex(data), "{created}");
    assert_eq!(created["size"], data.len());
    assert!(
        created["exe"]
            .as_str()
            .is_some_and(|e| e.contains("python")),
        "{created}"
    );
    net.teardown();
}

/// The proxy's uid is exempt from the TUN: an agent running as it is refused up front, in
/// one line, with nothing started.
#[test]
fn an_agent_as_the_proxys_uid_is_refused() {
    let net = PodNet::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(IDAGENT)
        .arg("run")
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .args(net.pod_args())
        .args(["--user", "7700:7700", "--image", GUEST_IMAGE, "--", "true"])
        .output()
        .expect("start idagent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("idagent: error:") && lines[0].contains("7700"),
        "{stderr}"
    );
    // No container was made: nothing on the network but the test's service.
    let on_net = docker(&["ps", "-aq", "--filter", &format!("network={}", net.name)]);
    assert_eq!(on_net.lines().count(), 1, "{on_net}");
    assert!(!dir.path().join("run/audit.jsonl").exists());
    net.teardown();
}

/// `idagent proxy` on the host: as a non-root uid with no net-init TUN it cannot start (one
/// line, exit 2, no run folder); as root it refuses (its own dials would loop into its TUN).
#[test]
fn the_proxy_refuses_to_start_without_its_tun_or_as_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, runs) = (dir.path().join("ctl"), dir.path().join("runs"));
    for d in [&ctl, &runs] {
        std::fs::create_dir(d).expect("mkdir");
        std::os::unix::fs::chown(d, Some(7700), Some(7700)).expect("chown");
    }
    let proxy_args = |cmd: &mut Command| {
        cmd.arg("proxy")
            .arg("--ctl")
            .arg(&ctl)
            .arg("--out")
            .arg(&runs)
            .args(["--offline", "--", "true"]);
    };
    let one_line = |out: &std::process::Output, needle: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with("idagent: error:") && lines[0].contains(needle),
            "{stderr}"
        );
    };
    let mut as_proxy = Command::new("setpriv");
    as_proxy.args([
        "--reuid",
        "7700",
        "--regid",
        "7700",
        "--clear-groups",
        IDAGENT,
    ]);
    proxy_args(&mut as_proxy);
    let out = as_proxy.output().expect("setpriv idagent proxy");
    one_line(&out, "tun0");
    let mut as_root = Command::new(IDAGENT);
    proxy_args(&mut as_root);
    let out = as_root.output().expect("idagent proxy");
    one_line(&out, "not root");
    // Neither got as far as a run: no run folder, no socket, no ready file.
    let left: Vec<_> = std::fs::read_dir(&runs)
        .expect("runs")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    for f in ["ready", "ctl.sock", "events.sock"] {
        assert!(!ctl.join(f).exists(), "{f}");
    }
}

const DNS: &str = r#"
import json, socket, struct, sys
r = {"resolv": open("/etc/resolv.conf").read()}
# The service container by its name: Docker's embedded resolver (127.0.0.11) would know it.
name = sys.argv[1]
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
try:
    s.sendto(q, ("127.0.0.11", 53))
    s.recvfrom(512)
    r["docker_dns"] = "answered"
except socket.timeout:
    r["docker_dns"] = "timeout"
except OSError as e:
    r["docker_dns"] = "error %s" % e.errno
try:
    r["getaddrinfo"] = socket.getaddrinfo(name, 80)[0][4][0]
except OSError as e:
    r["getaddrinfo"] = "error %s" % e
print("RESULT " + json.dumps(r))
"#;

/// Every name the agent looks up is answered, and logged, by idagent: its resolver is the
/// proxy's address, and Docker's embedded resolver on the pod's loopback (which knows the
/// network's container names) does not answer it.
#[test]
fn the_agents_names_are_idagents_not_dockers() {
    let net = PodNet::new();
    let service = docker(&["inspect", "-f", "{{.Name}}", &net.service])
        .trim_start_matches('/')
        .to_owned();
    let run = net.python(&[], DNS, &[&service]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let r = run.result();
    assert!(
        r["resolv"]
            .as_str()
            .is_some_and(|t| t.contains("nameserver 10.77.0.1")),
        "{}",
        run.explain()
    );
    assert_ne!(r["docker_dns"], "answered", "{}", run.explain());
    // Hermetic: the service's name is not mapped, so idagent refuses it — and says so.
    assert!(
        r["getaddrinfo"]
            .as_str()
            .is_some_and(|a| a.starts_with("error")),
        "{}",
        run.explain()
    );
    assert!(
        run.of_kind("dns").any(|e| e["name"] == service.as_str()),
        "the lookup of {service} is not in the log\n{}",
        run.explain()
    );
    net.teardown();
}

//! Sealing the guest's network namespace from the host side.
//!
//! Owns: creating the TUN device *inside* the container's network namespace (the container
//! gets neither `/dev/net/tun` nor `CAP_NET_ADMIN`), its addresses, the only default routes
//! (IPv4 and IPv6) through it, the fwmark policy route, and the iptables/ip6tables rules of
//! `guest/netfilter*.rules`. The TUN fd stays in this process; so does an fd on the namespace,
//! which keeps it alive until the run's teardown has read the firewall counters.
//! Does not own: what is done with packets read from the TUN (see `tundrv`).
//!
//! Mechanism: a short-lived thread `setns(2)`s into the namespace (a thread's namespace is its
//! own), creates the TUN and spawns `ip`/`iptables-restore` from there; children inherit the
//! thread's namespace. Only that thread ever changes namespace.

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

/// Interface name inside the guest.
pub const TUN_NAME: &str = "tun0";
/// Large MTU: fewer, bigger packets between the guest kernel and our stack.
pub const TUN_MTU: u16 = 65_520;
pub const GUEST_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const PREFIX_V4: u8 = 24;
pub const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
pub const PREFIX_V6: u8 = 64;
/// Mark set by the mangle rules and routing table that sends marked packets to the TUN.
pub const FWMARK: &str = "0x1d4";
pub const ROUTE_TABLE: &str = "77";

/// The guest's IPv4 rules, applied verbatim (kept readable under `guest/`).
pub const RULES_V4: &str = include_str!("../guest/netfilter.rules");
/// The guest's IPv6 rules.
pub const RULES_V6: &str = include_str!("../guest/netfilter6.rules");

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("open network namespace of pid {pid}: {source}")]
    OpenNetns { pid: i32, source: std::io::Error },
    #[error("enter network namespace of pid {pid}: {source}")]
    EnterNetns { pid: i32, source: nix::Error },
    #[error("create tun {name} in the guest namespace: {reason}")]
    OpenTun { name: &'static str, reason: String },
    #[error("`{command}` in the guest namespace failed: {reason}")]
    Command { command: String, reason: String },
    #[error("namespace setup thread failed")]
    Thread,
}

/// The sealed network of one guest, as returned by [`seal`].
pub struct GuestNet {
    /// The TUN device; its fd is the guest's only way out.
    pub tun: tun::Device,
    pub ns: GuestNs,
}

/// The guest's namespace handle and what was set up in it; kept until teardown.
#[derive(Debug)]
pub struct GuestNs {
    netns: File,
    pid: i32,
    pub routes: Vec<String>,
}

/// Creates the TUN, addresses, routes and firewall in the network namespace of host pid `pid`.
pub fn seal(pid: i32) -> Result<GuestNet, NetnsError> {
    let netns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|source| NetnsError::OpenNetns { pid, source })?;
    let ns = netns
        .try_clone()
        .map_err(|source| NetnsError::OpenNetns { pid, source })?;
    let (tun, routes) = in_netns(ns, pid, move || {
        // /proc/sys/net follows the writing thread's namespace, so these are the guest's.
        // Docker leaves IPv6 disabled in a --network none namespace; the guest's v6 traffic
        // must still reach the TUN rather than fail in a way the app could route around.
        for knob in ["all", "default"] {
            write_sysctl(&format!("ipv6/conf/{knob}/disable_ipv6"), "0")?;
        }
        let tun = create_tun()?;
        write_sysctl(&format!("ipv6/conf/{TUN_NAME}/disable_ipv6"), "0")?;
        // Brought up with no link-local address: no router solicitations or MLD reports from
        // the guest kernel, which are not guest behaviour.
        run(
            &["ip", "link", "set", "dev", TUN_NAME, "addrgenmode", "none"],
            None,
        )?;
        run(&["ip", "link", "set", "dev", TUN_NAME, "up"], None)?;
        let v6 = format!("{GUEST_V6}/{PREFIX_V6}");
        run(
            &["ip", "-6", "addr", "add", &v6, "dev", TUN_NAME, "nodad"],
            None,
        )?;
        for family in ["-4", "-6"] {
            let default = ["ip", family, "route", "replace", "default", "dev", TUN_NAME];
            run(&default, None)?;
            run(&[&default[..], &["table", ROUTE_TABLE]].concat(), None)?;
            let rule = [
                "ip",
                family,
                "rule",
                "add",
                "fwmark",
                FWMARK,
                "lookup",
                ROUTE_TABLE,
            ];
            run(&[&rule[..], &["pref", "100"]].concat(), None)?;
        }
        run(&["iptables-restore"], Some(RULES_V4))?;
        run(&["ip6tables-restore"], Some(RULES_V6))?;
        let listed = [
            run(&["ip", "-4", "route", "show", "table", "all"], None)?,
            run(&["ip", "-6", "route", "show", "table", "all"], None)?,
        ];
        let routes = listed
            .iter()
            .flat_map(|s| s.lines())
            .filter(|l| {
                !l.starts_with("local") && !l.starts_with("multicast") && !l.contains("fe80::")
            })
            .map(str::to_owned)
            .collect();
        Ok((tun, routes))
    })??;
    Ok(GuestNet {
        tun,
        ns: GuestNs { netns, pid, routes },
    })
}

impl std::fmt::Debug for GuestNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestNet")
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

impl GuestNet {
    /// Separates the TUN device (for its driver task) from the namespace handle.
    pub fn split(self) -> (tun::Device, GuestNs) {
        (self.tun, self.ns)
    }

    pub fn describe(&self) -> crate::audit::NetSetup {
        self.ns.describe()
    }
}

impl GuestNs {
    /// Packets counted by the final DROP rules (IPv4 + IPv6) of the guest firewall.
    pub fn firewall_drops(&self) -> Result<u64, NetnsError> {
        let ns = self
            .netns
            .try_clone()
            .map_err(|source| NetnsError::OpenNetns {
                pid: self.pid,
                source,
            })?;
        in_netns(ns, self.pid, || {
            let mut total = 0;
            for tool in ["iptables", "ip6tables"] {
                let out = run(&[tool, "-w", "-n", "-v", "-x", "-L", "IDAGENT_DROP"], None)?;
                total += parse_drop_counter(&out).unwrap_or(0);
            }
            Ok(total)
        })?
    }

    /// Addresses and routes for the `net_setup` audit event.
    pub fn describe(&self) -> crate::audit::NetSetup {
        crate::audit::NetSetup {
            tun: TUN_NAME.into(),
            mtu: u32::from(TUN_MTU),
            guest_addrs: vec![
                format!("{GUEST_V4}/{PREFIX_V4}"),
                format!("{GUEST_V6}/{PREFIX_V6}"),
            ],
            gateway_addrs: vec![GATEWAY_V4.to_string(), GATEWAY_V6.to_string()],
            routes: self.routes.clone(),
            rules_sha256: {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                h.update(RULES_V4);
                h.update(RULES_V6);
                hex::encode(h.finalize())
            },
            ca_sha256: None,
        }
    }
}

/// Runs `f` on a fresh thread that has joined the network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: File,
    pid: i32,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let handle = std::thread::Builder::new()
        .name("netns-setup".into())
        .spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|source| NetnsError::EnterNetns { pid, source })?;
            Ok(f())
        })
        .map_err(|_| NetnsError::Thread)?;
    handle.join().map_err(|_| NetnsError::Thread)?
}

fn create_tun() -> Result<tun::Device, NetnsError> {
    let mut config = tun::Configuration::default();
    config
        .tun_name(TUN_NAME)
        .address(GUEST_V4)
        .netmask(Ipv4Addr::from(u32::MAX << (32 - PREFIX_V4)))
        .mtu(TUN_MTU);
    tun::create(&config).map_err(|e| NetnsError::OpenTun {
        name: TUN_NAME,
        reason: e.to_string(),
    })
}

pub(crate) fn write_sysctl(key: &str, value: &str) -> Result<(), NetnsError> {
    std::fs::write(format!("/proc/sys/net/{key}"), value).map_err(|e| NetnsError::Command {
        command: format!("sysctl net.{key}={value}"),
        reason: e.to_string(),
    })
}

/// Whether `prog` is an executable file in `PATH` (the host tools sealing needs are checked
/// before the container exists).
pub fn tool_exists(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(prog))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Runs a command (in the calling thread's namespaces) and returns its stdout.
pub(crate) fn run(argv: &[&str], stdin: Option<&str>) -> Result<String, NetnsError> {
    let command = argv.join(" ");
    let fail = |reason: String| NetnsError::Command {
        command: command.clone(),
        reason,
    };
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| fail("empty command".into()))?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(format!(
                "cannot start {prog}: {e} (is it installed on the host?)"
            ))
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Packet count of the DROP rule in `iptables -nvxL IDAGENT_DROP` output.
fn parse_drop_counter(listing: &str) -> Option<u64> {
    listing
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("DROP"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counter_is_parsed() {
        let out = "Chain IDAGENT_DROP (1 references)\n    pkts      bytes target     prot opt in     out     source               destination\n       3      180 DROP       0    --  *      *       0.0.0.0/0            0.0.0.0/0\n";
        assert_eq!(parse_drop_counter(out), Some(3));
        assert_eq!(parse_drop_counter("garbage"), None);
    }

    #[test]
    fn rules_name_the_tun_and_drop_chain() {
        for rules in [RULES_V4, RULES_V6] {
            assert!(rules.contains(&format!("-o {TUN_NAME} -j ACCEPT")));
            assert!(rules.contains("-A IDAGENT_DROP -j DROP"));
            assert!(rules.contains(":OUTPUT DROP"));
        }
    }
}

//! `idagent net-init`: the pod's one privileged step (root with `CAP_NET_ADMIN` only, one-shot,
//! before the proxy and the agent exist). It runs in the pod's network namespace and leaves
//! behind, when it exits:
//!
//! - [`netns::TUN_NAME`], a *persistent* TUN owned by the proxy's uid and gid, so the proxy can
//!   attach to it later without any capability (the kernel lets a TUN's owner open it);
//! - the pod's original routes copied to table [`PROXY_TABLE`], which only the proxy's uid
//!   looks up (`ip rule uidrange`): its upstream dials leave by the pod's real interface;
//! - the TUN as the only default route of the main table (IPv4 and IPv6), plus the fwmark
//!   route of the Docker guest (table 77), so every other uid's packets end in the proxy's
//!   stack;
//! - the firewall of `guest/pod-netfilter*.rules`: nothing but the proxy's uid leaves by an
//!   interface other than lo and the TUN, and nothing from outside reaches the agent.
//!
//! It prints what it set up (the routing tables), one line each, and exits 0; any failure is
//! one line and exit 2, and the pod does not start (Kubernetes does not run the containers
//! after a failed init container).

use crate::netns::{self, run, NetnsError};

/// Routing table holding the pod's original routes, for the proxy's uid only.
pub const PROXY_TABLE: &str = "78";
/// Rule preferences: the proxy's exemption is looked up before the fwmark rule (100).
const PROXY_RULE_PREF: &str = "90";
const PROXY_STOP_PREF: &str = "91";
const OTHERS_PREF: &str = "95";

#[derive(Debug, thiserror::Error)]
pub enum NetInitError {
    #[error("net-init: {0}")]
    Net(#[from] NetnsError),
    #[error("net-init: the proxy's uid must not be root (0): its traffic is exempt from the TUN")]
    RootProxy,
    #[error("net-init: {0}")]
    Tun(String),
}

/// The pod rules with the proxy's uid filled in.
pub fn rules(template: &str, proxy_uid: u32) -> String {
    template.replace("@PROXY_UID@", &proxy_uid.to_string())
}

pub const POD_RULES_V4: &str = include_str!("../../guest/pod-netfilter.rules");
pub const POD_RULES_V6: &str = include_str!("../../guest/pod-netfilter6.rules");

/// `idagent net-init`.
pub fn command(args: &crate::cli::NetInitArgs) -> Result<(), NetInitError> {
    if args.proxy_uid == 0 {
        return Err(NetInitError::RootProxy);
    }
    // IPv6 may be disabled in the namespace (Docker does that on a network without IPv6) and
    // /proc/sys read-only (a container's usual mount): then IPv6 simply has no route at all —
    // the agent's v6 traffic fails, it cannot go around the TUN.
    let mut v6 = true;
    for knob in ["all", "default"] {
        if netns::write_sysctl(&format!("ipv6/conf/{knob}/disable_ipv6"), "0").is_err() {
            v6 = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6"))
                .is_ok_and(|s| s.trim() == "0")
                && v6;
        }
    }
    let tun = create_persistent_tun(args.proxy_uid, args.proxy_gid)?;
    // The fd is closed here: the device persists, owned by the proxy, for it to attach to.
    drop(tun);
    let name = netns::TUN_NAME;
    run(
        &["ip", "link", "set", "dev", name, "addrgenmode", "none"],
        None,
    )?;
    run(&["ip", "link", "set", "dev", name, "up"], None)?;
    if v6 {
        let addr = format!("{}/{}", netns::GUEST_V6, netns::PREFIX_V6);
        v6 = run(
            &["ip", "-6", "addr", "add", &addr, "dev", name, "nodad"],
            None,
        )
        .is_ok();
    }
    if !v6 {
        println!("idagent net-init: IPv6 is disabled in this namespace: it has no route at all");
    }
    let uids = format!("{0}-{0}", args.proxy_uid);
    let families: &[&str] = if v6 { &["-4", "-6"] } else { &["-4"] };
    for &family in families {
        // The pod's own routes, for the proxy only: copied before the main table changes.
        let main = run(
            &["ip", "-o", family, "route", "show", "table", "main"],
            None,
        )?;
        for route in main.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut argv = vec!["ip", family, "route", "replace"];
            argv.extend(
                route
                    .split_whitespace()
                    .filter(|w| !matches!(*w, "linkdown" | "offload" | "trap")),
            );
            argv.extend(["table", PROXY_TABLE]);
            run(&argv, None)?;
        }
        let default = ["ip", family, "route", "replace", "default", "dev", name];
        run(&default, None)?;
        run(
            &[&default[..], &["table", netns::ROUTE_TABLE]].concat(),
            None,
        )?;
        for (pref, selector, action) in policy_rules(&uids) {
            let mut argv = vec!["ip", family, "rule", "add", "pref", pref];
            argv.extend(selector.iter().chain(action.iter()).map(String::as_str));
            run(&argv, None)?;
        }
    }
    run(
        &["iptables-restore"],
        Some(&rules(POD_RULES_V4, args.proxy_uid)),
    )?;
    run(
        &["ip6tables-restore"],
        Some(&rules(POD_RULES_V6, args.proxy_uid)),
    )?;
    for family in families {
        let routes = run(&["ip", family, "route", "show", "table", "all"], None)?;
        for line in routes
            .lines()
            .filter(|l| !l.starts_with("local") && !l.starts_with("multicast"))
        {
            println!("idagent net-init: route {line}");
        }
    }
    println!(
        "idagent net-init: {name} is the only default route; uid {} is exempt (table {PROXY_TABLE})",
        args.proxy_uid
    );
    Ok(())
}

/// The policy-routing rules, in order of preference: (pref, selector, action).
///
/// - 90: the proxy's uid looks up the pod's own routes (its upstream dials leave by `eth0`);
/// - 91: and nothing else — a destination those routes do not cover must not fall through to
///   the TUN for the proxy: its dial would come back into its own stack, and around again;
/// - 95: every other uid looks up the TUN's table first, so its packets get the TUN's source
///   address and `-o tun0` in the firewall (which sees the first routing decision, not the
///   fwmark's re-route) — the pod's own subnet included;
/// - 100: the Docker guest's fwmark rule, for what the mangle table marks.
fn policy_rules(uids: &str) -> Vec<(&'static str, Vec<String>, Vec<String>)> {
    let v = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    vec![
        (
            PROXY_RULE_PREF,
            v(&["uidrange", uids]),
            v(&["lookup", PROXY_TABLE]),
        ),
        (PROXY_STOP_PREF, v(&["uidrange", uids]), v(&["prohibit"])),
        (
            OTHERS_PREF,
            v(&["not", "uidrange", uids]),
            v(&["lookup", netns::ROUTE_TABLE]),
        ),
        (
            "100",
            v(&["fwmark", netns::FWMARK]),
            v(&["lookup", netns::ROUTE_TABLE]),
        ),
    ]
}

fn create_persistent_tun(uid: u32, gid: u32) -> Result<tun::Device, NetInitError> {
    let mut config = tun::Configuration::default();
    config
        .tun_name(netns::TUN_NAME)
        .address(netns::GUEST_V4)
        .netmask(std::net::Ipv4Addr::from(
            u32::MAX << (32 - netns::PREFIX_V4),
        ))
        .mtu(netns::TUN_MTU);
    let fail = |e: tun::Error| NetInitError::Tun(format!("create {}: {e}", netns::TUN_NAME));
    let mut dev = tun::create(&config).map_err(fail)?;
    dev.user(uid as i32).map_err(fail)?;
    dev.group(gid as i32).map_err(fail)?;
    dev.persist().map_err(fail)?;
    Ok(dev)
}

/// Attaches to the persistent TUN net-init left (as its owner: no capability needed). The
/// device is configured already; only the fd is taken.
pub fn attach_tun() -> Result<tun::Device, String> {
    let mut config = tun::Configuration::default();
    config.tun_name(netns::TUN_NAME).mtu(netns::TUN_MTU);
    config.platform_config(|p| {
        p.ensure_root_privileges(false);
    });
    tun::create(&config).map_err(|e| {
        format!(
            "attach to {} (did net-init run in this pod, for this uid?): {e}",
            netns::TUN_NAME
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_proxy_reaches_the_pods_routes_and_everyone_else_the_tun_first() {
        let rules = policy_rules("7700-7700");
        let prefs: Vec<u32> = rules.iter().map(|r| r.0.parse().expect("pref")).collect();
        assert!(prefs.windows(2).all(|w| w[0] < w[1]), "{prefs:?}");
        assert_eq!(rules[0].2, ["lookup", PROXY_TABLE]);
        assert_eq!(rules[1].2, ["prohibit"]);
        assert_eq!(rules[2].1, ["not", "uidrange", "7700-7700"]);
        assert_eq!(rules[2].2, ["lookup", netns::ROUTE_TABLE]);
    }

    #[test]
    fn the_proxy_uid_is_filled_in_everywhere() {
        for template in [POD_RULES_V4, POD_RULES_V6] {
            let r = rules(template, 7700);
            assert!(!r.contains("@PROXY_UID@"));
            assert!(r.matches("--uid-owner 7700").count() >= 3, "{r}");
            // The default is DROP both ways; only lo, the TUN and the proxy are let out.
            assert!(r.contains(":OUTPUT DROP") && r.contains(":INPUT DROP"));
        }
    }
}

//! idagent: run an untrusted program in a sealed guest container and record everything it does.
//!
//! See `ARCHITECTURE.md` for the map of these modules, the data flow and the trust boundaries.
#![deny(unsafe_code)]

pub mod attribution;
pub mod audit;
pub mod fswatch;
pub mod procevents;
pub mod supervisor;

/// Where the guest's one writable directory is mounted, as the guest sees it.
pub const GUEST_WORKSPACE: &str = "/tmp/workspace";
pub mod cli;
pub mod config;
pub mod diff;
pub mod dns;
pub mod enforce;
pub mod export;
pub mod gateway;
pub mod image;
pub mod k8s;
pub mod net;
pub mod netdrv;
pub mod netns;
pub mod pcap;
pub mod pod;
pub mod policy_cmd;
pub mod redact;
pub mod report;
pub mod runtime;
pub mod sandbox;
pub mod standalone;
pub mod tls;
pub mod upstream;
pub mod verdict;

//! The guest's DNS, answered by idagent: one query in, one response and one audit record out.
//!
//! Owns [`DnsService`]: it applies `upstream::resolve_policy`, hands out synthetic addresses
//! for mapped names from the run's [`NameTable`] (shared with the gateway through
//! [`DnsService::names`]), asks the host resolver (hickory, configured from the host's
//! `/etc/resolv.conf`, never its hosts file) for unmapped names when online, and records real
//! answers in the table so flows can be labelled. The wire format lives in `wire` (pure).
//! It does not own sockets: the gateway feeds it UDP payloads and de-framed TCP messages and
//! writes [`DnsOutcome::event`] to the audit log.
//!
//! Caps: [`DEFAULT_MAX_INFLIGHT_DNS`] concurrent resolutions (over it: SERVFAIL, `busy`),
//! [`RESOLVE_TIMEOUT`] per resolution, [`MAX_QUERY_BYTES`], [`MAX_NAME_CHARS`],
//! [`MAX_ANSWERS`] per response, [`crate::upstream::DEFAULT_MAX_NAMES`] names in the table.

mod wire;

pub use wire::{
    addresses_for, build_error, build_response, frame_tcp, parse_query, split_tcp_messages, Answer,
    DnsError, FrameTooLong, Query, Rcode, ANSWER_TTL_SECS, MAX_ANSWERS, MAX_NAME_CHARS,
    MAX_QUERY_BYTES,
};

use crate::upstream::{resolve_policy, NameRefuseReason, NameTable, NameVerdict, NxReason, Policy};
use hickory_proto::rr::RData;
use hickory_resolver::config::{ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Host-resolver lookups in flight at once, per run.
pub const DEFAULT_MAX_INFLIGHT_DNS: usize = 64;
/// Longest a host-resolver lookup may take before the guest gets SERVFAIL.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsSource {
    /// The operator's map (synthetic addresses).
    Mapped,
    /// The host resolver.
    Resolver,
    /// idagent's policy answered without asking anyone.
    Refused,
    /// The packet was not a query idagent could read.
    Invalid,
}

/// Why policy or a cap stopped a query (the `blocked` field of the audit record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsBlock {
    /// Offline run, name not mapped: NXDOMAIN.
    Offline,
    /// Only A and AAAA are forwarded: REFUSED.
    UnsupportedType,
    /// Not class IN: REFUSED.
    UnsupportedClass,
    /// Name over [`MAX_NAME_CHARS`]: REFUSED.
    NameTooLong,
    /// [`DEFAULT_MAX_INFLIGHT_DNS`] lookups already in flight: SERVFAIL.
    Busy,
    /// The synthetic pool is full: SERVFAIL.
    NameTableFull,
}

/// The audit payload of one query (the future `EventBody::Dns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsEventData {
    /// Lowercase, no trailing dot; empty when the packet could not be parsed.
    pub name: String,
    /// `A`, `AAAA`, `HTTPS` …, `TYPE65280` for unknown types; empty when unparsed.
    pub qtype: String,
    /// The code sent; absent when nothing was sent (responses, packets without a header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<Rcode>,
    /// The addresses answered.
    pub answers: Vec<String>,
    pub source: DnsSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<DnsBlock>,
    /// Parse or resolver error text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The reply to send (if any) and the record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsOutcome {
    pub response: Option<Vec<u8>>,
    pub event: DnsEventData,
}

/// The host resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    #[error("read host resolver configuration (/etc/resolv.conf): {0}")]
    ReadSystemConf(#[source] ResolveError),
}

/// One run's DNS server logic. Cheap to share behind an `Arc`; `answer` takes `&self`.
pub struct DnsService {
    policy: Policy,
    names: Arc<Mutex<NameTable>>,
    /// `None` offline: nothing is ever forwarded then.
    resolver: Option<TokioResolver>,
    inflight: Arc<Semaphore>,
    resolve_timeout: Duration,
    /// The run's policy enforcer; `None`: no policy decisions (unit tests, no `--policy`).
    enforcer: Option<Arc<crate::enforce::Enforcer>>,
}

impl std::fmt::Debug for DnsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsService")
            .field("policy", &self.policy)
            .field(
                "resolver",
                &self
                    .resolver
                    .as_ref()
                    .map(|r| r.config().name_servers().len()),
            )
            .field("inflight_available", &self.inflight.available_permits())
            .finish_non_exhaustive()
    }
}

/// What to answer and how to record it.
struct Decision {
    answer: Answer,
    source: DnsSource,
    blocked: Option<DnsBlock>,
    error: Option<String>,
}

impl Decision {
    fn new(answer: Answer, source: DnsSource, blocked: Option<DnsBlock>) -> Self {
        Decision {
            answer,
            source,
            blocked,
            error: None,
        }
    }
}

impl DnsService {
    /// A service for `policy`; online, the host resolver is configured from
    /// `/etc/resolv.conf` (offline it is not read at all).
    pub fn new(policy: Policy) -> Result<Self, DnsSetupError> {
        let resolver = if policy.offline {
            None
        } else {
            let (config, opts) = hickory_resolver::system_conf::read_system_conf()
                .map_err(DnsSetupError::ReadSystemConf)?;
            Some(build_resolver(config, opts))
        };
        Ok(Self::from_parts(policy, resolver))
    }

    /// A service whose resolver uses `config` (explicit upstream servers, tests).
    pub fn with_resolver_config(policy: Policy, config: ResolverConfig) -> Self {
        let resolver = build_resolver(config, ResolverOpts::default());
        Self::from_parts(policy, Some(resolver))
    }

    fn from_parts(policy: Policy, resolver: Option<TokioResolver>) -> Self {
        DnsService {
            policy,
            names: Arc::new(Mutex::new(NameTable::default())),
            resolver,
            inflight: Arc::new(Semaphore::new(DEFAULT_MAX_INFLIGHT_DNS)),
            resolve_timeout: RESOLVE_TIMEOUT,
            enforcer: None,
        }
    }

    /// Asks `enforcer` about every name that routing would answer (mapped or resolved); a
    /// denied name gets NXDOMAIN and is neither given a synthetic address nor resolved.
    pub fn with_enforcer(mut self, enforcer: Arc<crate::enforce::Enforcer>) -> Self {
        self.enforcer = Some(enforcer);
        self
    }

    /// Whether the policy refuses `query` (its `decision` event is written here).
    fn denied(&self, query: &Query) -> bool {
        let Some(enforcer) = &self.enforcer else {
            return false;
        };
        let qtype = qtype_name(query.qtype);
        let req = idagent_policy::Request::Dns {
            name: &query.name,
            qtype: &qtype,
        };
        matches!(
            enforcer.check(&req, crate::enforce::Context::default(), "nxdomain"),
            crate::enforce::Permit::Deny(_)
        )
    }

    /// Replaces the in-flight cap (default [`DEFAULT_MAX_INFLIGHT_DNS`]).
    pub fn with_max_inflight(mut self, max: usize) -> Self {
        self.inflight = Arc::new(Semaphore::new(max));
        self
    }

    /// The run's name table, shared with the gateway (lock briefly; never across an await).
    pub fn names(&self) -> Arc<Mutex<NameTable>> {
        Arc::clone(&self.names)
    }

    /// The policy this service answers by (the gateway evaluates dials with the same one).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Answers one guest DNS message (a UDP payload or one de-framed TCP message).
    pub async fn answer(&self, packet: &[u8]) -> DnsOutcome {
        let query = match parse_query(packet) {
            Ok(query) => query,
            Err(err) => return invalid(&err),
        };
        // Every query is decided (and logged) by the policy; routing's own refusals (offline,
        // unsupported types) stand whatever the policy says: a policy never widens routing.
        let denied = self.denied(&query);
        let decision = match resolve_policy(&self.policy, &query.name, query.qtype) {
            NameVerdict::Mapped | NameVerdict::Resolve if denied => {
                Decision::new(Answer::NxDomain, DnsSource::Refused, None)
            }
            NameVerdict::Mapped => self.mapped(&query),
            NameVerdict::NxDomain(NxReason::OfflineUnmapped) => Decision::new(
                Answer::NxDomain,
                DnsSource::Refused,
                Some(DnsBlock::Offline),
            ),
            NameVerdict::Refuse(NameRefuseReason::UnsupportedType) => Decision::new(
                Answer::Refused,
                DnsSource::Refused,
                Some(DnsBlock::UnsupportedType),
            ),
            NameVerdict::Resolve => self.resolve(&query).await,
        };
        let answers = match &decision.answer {
            Answer::Addresses(addrs) => addresses_for(query.qtype, addrs)
                .iter()
                .map(ToString::to_string)
                .collect(),
            _ => Vec::new(),
        };
        DnsOutcome {
            response: Some(build_response(&query, &decision.answer)),
            event: DnsEventData {
                name: query.name.clone(),
                qtype: qtype_name(query.qtype),
                rcode: Some(decision.answer.rcode()),
                answers,
                source: decision.source,
                blocked: decision.blocked,
                error: decision.error,
            },
        }
    }

    fn lock_names(&self) -> std::sync::MutexGuard<'_, NameTable> {
        // A panic elsewhere while holding the lock leaves the table consistent (every update
        // is a single insert), so a poisoned lock is still usable.
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mapped(&self, query: &Query) -> Decision {
        match self.lock_names().synthetic_for(&query.name) {
            Ok((v4, v6)) => Decision::new(
                Answer::Addresses(vec![IpAddr::V4(v4), IpAddr::V6(v6)]),
                DnsSource::Mapped,
                None,
            ),
            Err(full) => Decision {
                error: Some(full.to_string()),
                ..Decision::new(
                    Answer::ServFail,
                    DnsSource::Mapped,
                    Some(DnsBlock::NameTableFull),
                )
            },
        }
    }

    async fn resolve(&self, query: &Query) -> Decision {
        let failed = |error: String| Decision {
            error: Some(error),
            ..Decision::new(Answer::ServFail, DnsSource::Resolver, None)
        };
        let Some(resolver) = &self.resolver else {
            return failed("no host resolver configured".to_string());
        };
        let Ok(_permit) = Arc::clone(&self.inflight).try_acquire_owned() else {
            return Decision::new(Answer::ServFail, DnsSource::Resolver, Some(DnsBlock::Busy));
        };
        let mut name = query.wire_name().to_lowercase();
        name.set_fqdn(true);
        let lookup = resolver.lookup(name, query.qtype);
        match tokio::time::timeout(self.resolve_timeout, lookup).await {
            Err(_) => failed(format!(
                "no answer within {}s",
                self.resolve_timeout.as_secs()
            )),
            Ok(Ok(lookup)) => {
                let addrs: Vec<IpAddr> = lookup
                    .iter()
                    .filter_map(|rdata| match rdata {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    })
                    .collect();
                let addrs = addresses_for(query.qtype, &addrs);
                self.lock_names().record_answer(&query.name, &addrs);
                Decision::new(Answer::Addresses(addrs), DnsSource::Resolver, None)
            }
            Ok(Err(e)) if e.is_nx_domain() => {
                Decision::new(Answer::NxDomain, DnsSource::Resolver, None)
            }
            Ok(Err(e)) if e.is_no_records_found() => {
                Decision::new(Answer::Addresses(Vec::new()), DnsSource::Resolver, None)
            }
            Ok(Err(e)) => {
                tracing::debug!(dns.name = %query.name, error = %e, "host resolver failed");
                failed(e.to_string())
            }
        }
    }
}

fn build_resolver(config: ResolverConfig, mut opts: ResolverOpts) -> TokioResolver {
    // The host's hosts file describes the host, not the internet the guest may reach.
    opts.use_hosts_file = ResolveHosts::Never;
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

/// The outcome for a packet that is not a readable query.
fn invalid(err: &DnsError) -> DnsOutcome {
    let (name, blocked) = match err {
        DnsError::UnsupportedClass { name, .. } => (name.clone(), Some(DnsBlock::UnsupportedClass)),
        DnsError::NameTooLong { .. } => (String::new(), Some(DnsBlock::NameTooLong)),
        _ => (String::new(), None),
    };
    let reply = err.reply();
    DnsOutcome {
        response: reply.map(|(id, rcode)| build_error(id, rcode)),
        event: DnsEventData {
            name,
            qtype: String::new(),
            rcode: reply.map(|(_, rcode)| rcode),
            answers: Vec::new(),
            source: DnsSource::Invalid,
            blocked,
            error: Some(err.to_string()),
        },
    }
}

/// `A`, `AAAA` …; RFC 3597 `TYPEnnn` for types hickory does not name.
fn qtype_name(qtype: hickory_proto::rr::RecordType) -> String {
    match qtype {
        hickory_proto::rr::RecordType::Unknown(code) => format!("TYPE{code}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;

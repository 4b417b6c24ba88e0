//! What a decision point asks ([`Request`], borrowed; [`OwnedRequest`] to keep or send) and
//! what it gets back ([`Decision`]). Owns no matching logic.

use crate::kinds::{FileOp, Layer, Mode, Proto, Scheme, Verdict};
use serde::Serialize;
use std::net::IpAddr;

/// One question to the policy, borrowed from the caller's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// A DNS query (`qtype` is informational: it never changes the result).
    Dns { name: &'a str, qtype: &'a str },
    /// A TCP (or UDP) connection. `name` is supplied only when an allowed name resolved to
    /// `addr` in this run.
    Connect {
        name: Option<&'a str>,
        addr: IpAddr,
        port: u16,
        proto: Proto,
    },
    /// A TLS ClientHello.
    Tls {
        sni: Option<&'a str>,
        alpn: &'a [String],
        name: Option<&'a str>,
        addr: IpAddr,
        port: u16,
    },
    /// One HTTP request (plain, or inside intercepted TLS).
    Http {
        scheme: Scheme,
        host: &'a str,
        port: u16,
        method: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        /// What the request is beyond HTTP, when the gateway can tell: a gRPC call (from its
        /// path and content type, [`grpc_call`]) or an MCP tool call (from its body).
        rpc: Option<Rpc<'a>>,
    },
    /// Opaque bytes on a TCP flow: what the gateway relays when a connection's bytes are not
    /// HTTP (`tls`: inside an intercepted TLS session). Decided at [`Layer::Connect`]; only a
    /// rule that needs no HTTP inspection (`tcp`, `tls`, `inspect: l4`) allows it. `name` as
    /// for [`Request::Connect`].
    Stream {
        name: Option<&'a str>,
        addr: IpAddr,
        port: u16,
        tls: bool,
    },
    /// A UDP datagram flow.
    Datagram {
        name: Option<&'a str>,
        addr: IpAddr,
        port: u16,
    },
    /// A write-side file operation.
    FileWrite { path: &'a str, op: FileOp },
    /// A rename of `from` to `to` (`dir`: the entry is a directory). Decided on the rights at
    /// both parent directories, as Landlock does ([`crate::rename_rights`]).
    FileRename {
        from: &'a str,
        to: &'a str,
        dir: bool,
    },
    /// An exec.
    Exec { path: &'a str, argv: &'a [String] },
}

/// A [`Request`] that owns its strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "layer", rename_all = "snake_case")]
pub enum OwnedRequest {
    /// See [`Request::Dns`].
    Dns { name: String, qtype: String },
    /// See [`Request::Connect`].
    Connect {
        name: Option<String>,
        addr: IpAddr,
        port: u16,
        proto: Proto,
    },
    /// See [`Request::Tls`].
    Tls {
        sni: Option<String>,
        alpn: Vec<String>,
        name: Option<String>,
        addr: IpAddr,
        port: u16,
    },
    /// See [`Request::Http`].
    Http {
        scheme: Scheme,
        host: String,
        port: u16,
        method: String,
        path: String,
        query: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rpc: Option<OwnedRpc>,
    },
    /// See [`Request::Stream`].
    Stream {
        name: Option<String>,
        addr: IpAddr,
        port: u16,
        tls: bool,
    },
    /// See [`Request::Datagram`].
    Datagram {
        name: Option<String>,
        addr: IpAddr,
        port: u16,
    },
    /// See [`Request::FileWrite`].
    FileWrite { path: String, op: FileOp },
    /// See [`Request::FileRename`].
    FileRename { from: String, to: String, dir: bool },
    /// See [`Request::Exec`].
    Exec { path: String, argv: Vec<String> },
}

impl Request<'_> {
    /// The decision point this request comes from.
    pub fn layer(&self) -> Layer {
        match self {
            Request::Dns { .. } => Layer::Dns,
            Request::Connect { .. } | Request::Stream { .. } => Layer::Connect,
            Request::Tls { .. } => Layer::Tls,
            Request::Http { .. } => Layer::Http,
            Request::Datagram { .. } => Layer::Datagram,
            Request::FileWrite { .. } | Request::FileRename { .. } => Layer::File,
            Request::Exec { .. } => Layer::Exec,
        }
    }

    /// An owned copy.
    pub fn to_owned(&self) -> OwnedRequest {
        let s = |v: &str| v.to_string();
        match *self {
            Request::Dns { name, qtype } => OwnedRequest::Dns {
                name: s(name),
                qtype: s(qtype),
            },
            Request::Connect {
                name,
                addr,
                port,
                proto,
            } => OwnedRequest::Connect {
                name: name.map(s),
                addr,
                port,
                proto,
            },
            Request::Tls {
                sni,
                alpn,
                name,
                addr,
                port,
            } => OwnedRequest::Tls {
                sni: sni.map(s),
                alpn: alpn.to_vec(),
                name: name.map(s),
                addr,
                port,
            },
            Request::Http {
                scheme,
                host,
                port,
                method,
                path,
                query,
                rpc,
            } => OwnedRequest::Http {
                scheme,
                host: s(host),
                port,
                method: s(method),
                path: s(path),
                query: query.map(s),
                rpc: rpc.map(|r| r.to_owned()),
            },
            Request::Stream {
                name,
                addr,
                port,
                tls,
            } => OwnedRequest::Stream {
                name: name.map(s),
                addr,
                port,
                tls,
            },
            Request::Datagram { name, addr, port } => OwnedRequest::Datagram {
                name: name.map(s),
                addr,
                port,
            },
            Request::FileWrite { path, op } => OwnedRequest::FileWrite { path: s(path), op },
            Request::FileRename { from, to, dir } => OwnedRequest::FileRename {
                from: s(from),
                to: s(to),
                dir,
            },
            Request::Exec { path, argv } => OwnedRequest::Exec {
                path: s(path),
                argv: argv.to_vec(),
            },
        }
    }
}

impl OwnedRequest {
    /// A borrowed view.
    pub fn as_request(&self) -> Request<'_> {
        match self {
            OwnedRequest::Dns { name, qtype } => Request::Dns { name, qtype },
            OwnedRequest::Connect {
                name,
                addr,
                port,
                proto,
            } => Request::Connect {
                name: name.as_deref(),
                addr: *addr,
                port: *port,
                proto: *proto,
            },
            OwnedRequest::Tls {
                sni,
                alpn,
                name,
                addr,
                port,
            } => Request::Tls {
                sni: sni.as_deref(),
                alpn,
                name: name.as_deref(),
                addr: *addr,
                port: *port,
            },
            OwnedRequest::Http {
                scheme,
                host,
                port,
                method,
                path,
                query,
                rpc,
            } => Request::Http {
                scheme: *scheme,
                host,
                port: *port,
                method,
                path,
                query: query.as_deref(),
                rpc: rpc.as_ref().map(OwnedRpc::as_rpc),
            },
            OwnedRequest::Stream {
                name,
                addr,
                port,
                tls,
            } => Request::Stream {
                name: name.as_deref(),
                addr: *addr,
                port: *port,
                tls: *tls,
            },
            OwnedRequest::Datagram { name, addr, port } => Request::Datagram {
                name: name.as_deref(),
                addr: *addr,
                port: *port,
            },
            OwnedRequest::FileWrite { path, op } => Request::FileWrite { path, op: *op },
            OwnedRequest::FileRename { from, to, dir } => Request::FileRename {
                from,
                to,
                dir: *dir,
            },
            OwnedRequest::Exec { path, argv } => Request::Exec { path, argv },
        }
    }

    /// The decision point this request comes from.
    pub fn layer(&self) -> Layer {
        self.as_request().layer()
    }
}

/// What an HTTP request carries beyond method and path, as far as the policy decides on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc<'a> {
    /// A gRPC call: `POST /{service}/{method}` with `content-type: application/grpc*`
    /// ([`grpc_call`]). Only `grpc` sub-rules match it by service and method; plain http
    /// sub-rules match it as the HTTP request it is.
    Grpc { service: &'a str, method: &'a str },
    /// An MCP `tools/call` (a JSON-RPC request in the body) of this tool. `None`: a body the
    /// gateway had to read for a tools rule but could not read as JSON-RPC (over the size
    /// cap, not complete in time, not JSON), or a `tools/call` naming no tool: a call of an
    /// unknown tool, which no tools list allows.
    Tool(Option<&'a str>),
}

impl Rpc<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> OwnedRpc {
        match *self {
            Rpc::Grpc { service, method } => OwnedRpc::Grpc {
                service: service.to_owned(),
                method: method.to_owned(),
            },
            Rpc::Tool(tool) => OwnedRpc::Tool {
                tool: tool.map(str::to_owned),
            },
        }
    }
}

/// An [`Rpc`] that owns its strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rpc", rename_all = "snake_case")]
pub enum OwnedRpc {
    /// See [`Rpc::Grpc`].
    Grpc { service: String, method: String },
    /// See [`Rpc::Tool`].
    Tool { tool: Option<String> },
}

impl OwnedRpc {
    /// A borrowed view.
    pub fn as_rpc(&self) -> Rpc<'_> {
        match self {
            OwnedRpc::Grpc { service, method } => Rpc::Grpc { service, method },
            OwnedRpc::Tool { tool } => Rpc::Tool(tool.as_deref()),
        }
    }
}

/// Whether `s` is a gRPC service name (`pkg.sub.Service`: dot-separated identifiers).
pub(crate) fn is_grpc_service(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_grpc_ident)
}

/// Whether `s` is a protobuf identifier (a gRPC method name, one label of a service name).
pub(crate) fn is_grpc_ident(s: &str) -> bool {
    s.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The gRPC call an HTTP request makes, if it is one: a `POST` of `content-type:
/// application/grpc` (or `application/grpc+proto`, `application/grpc-web`...) to
/// `/{service}/{method}` with no query, both parts plain protobuf names. Anything else
/// (percent escapes, more segments, a query) is not a gRPC call here and is decided as the
/// plain HTTP request it is, which no `grpc` rule allows. Pure; the gateway (live) and the
/// replay of a log both use it.
pub fn grpc_call<'a>(
    method: &str,
    path: &'a str,
    query: Option<&str>,
    content_type: Option<&str>,
) -> Option<Rpc<'a>> {
    let grpc = content_type.is_some_and(|c| {
        c.trim()
            .get(..16)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
    });
    if !grpc || method != "POST" || query.is_some() {
        return None;
    }
    let (service, name) = path.strip_prefix('/')?.split_once('/')?;
    (is_grpc_service(service) && is_grpc_ident(name)).then_some(Rpc::Grpc {
        service,
        method: name,
    })
}

/// The rule id of an MCP tool call denied because the tools rule that matched its endpoint
/// does not list the tool (and no other rule decided).
pub const TOOL_NOT_ALLOWED: &str = "mcp-tool-not-allowed";

/// The rule id of a decision no rule made.
pub const DEFAULT_DENY: &str = "default-deny";

/// The rule id of an HTTP request denied because its path is not canonical
/// ([`crate::is_canonical_path`]): no `l7` rule matches such a path.
pub const NONCANONICAL_PATH: &str = "noncanonical-path";

/// The answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// The deciding rule's id, `default-deny` or `noncanonical-path`.
    pub rule: String,
    /// The mode the decision takes (rule, else section, else global).
    pub mode: Mode,
    /// The decision point.
    pub layer: Layer,
}

impl Decision {
    /// A deny (whether enforced or reported).
    pub fn is_deny(&self) -> bool {
        self.verdict == Verdict::Deny
    }
    /// A deny that refuses the request.
    pub fn enforced(&self) -> bool {
        self.is_deny() && self.mode == Mode::Enforce
    }
    /// A deny that only records: the request goes through.
    pub fn would_deny(&self) -> bool {
        self.is_deny() && self.mode == Mode::Report
    }
    /// Whether no rule matched.
    pub fn is_default_deny(&self) -> bool {
        self.rule == DEFAULT_DENY
    }
}

//! Honest ALPN (issue 10, item 2): a guest that offers only `h2` gets `h2` without any flag; a
//! handshake that fails says who ended it and why; the `tls` record lists what the guest
//! offered; `--http1-only` refuses an h2-only guest and says why. Real guests (Python's
//! `ssl`), offline: nothing leaves the host.

mod common;
use common::*;

const PROBE: &str = r#"
import json, socket, ssl
out = {}
def hello(name, alpn, verify=True):
    ctx = ssl.create_default_context() if verify else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED  # and no CA loaded: our certificate is refused
    ctx.set_alpn_protocols(alpn)
    s = socket.create_connection(("192.0.2.10", 443), timeout=10)
    try:
        t = ctx.wrap_socket(s, server_hostname="192.0.2.10")
        out[name] = t.selected_alpn_protocol()
        t.close()
    except (ssl.SSLError, OSError) as e:
        out[name] = "error: " + type(e).__name__
"#;

fn probe() -> String {
    format!(
        "{PROBE}\nhello('h2_only', ['h2'])\nhello('both', ['h2', 'http/1.1'])\n\
         hello('unknown', ['spdy/3'])\nhello('untrusting', ['http/1.1'], verify=False)\n\
         print('RESULT ' + json.dumps(out), flush=True)\n"
    )
}

#[test]
fn alpn_is_honest_and_failures_say_who_refused() {
    let script = probe();
    let run = offline_python(&[], &script);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let got = run.result();
    assert_eq!(got["h2_only"], "h2", "an h2-only client works: {got}");
    assert_eq!(got["both"], "h2", "HTTP/2 is the default: {got}");
    assert!(
        got["unknown"].as_str().unwrap_or("").starts_with("error"),
        "{got}"
    );
    assert!(
        got["untrusting"]
            .as_str()
            .unwrap_or("")
            .starts_with("error"),
        "{got}"
    );

    let tls: Vec<_> = run.of_kind("tls").collect();
    let by_offer = |offer: &[&str]| {
        tls.iter()
            .find(|e| e["alpn_offered"] == serde_json::json!(offer))
            .unwrap_or_else(|| panic!("no tls record offering {offer:?}\n{}", run.explain()))
    };
    let h2 = by_offer(&["h2"]);
    assert_eq!(h2["alpn"], "h2");
    assert_eq!(h2["mode"], "intercepted");
    let unknown = by_offer(&["spdy/3"]);
    assert_eq!(unknown["mode"], "rejected");
    assert_eq!(unknown["refused_by"], "idagent", "{unknown}");
    assert!(
        unknown["error"]
            .as_str()
            .unwrap_or("")
            .contains("no application protocol in common"),
        "{unknown}"
    );
    let untrusting = tls
        .iter()
        .find(|e| e["mode"] == "rejected" && e["refused_by"] == "guest")
        .unwrap_or_else(|| panic!("the untrusting guest's refusal\n{}", run.explain()));
    assert!(
        untrusting["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not trust our certificate"),
        "{untrusting}"
    );
}

#[test]
fn http1_only_refuses_an_h2_only_guest_and_says_why() {
    let script = probe();
    let run = offline_python(&["--http1-only"], &script);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let got = run.result();
    assert!(
        got["h2_only"].as_str().unwrap_or("").starts_with("error"),
        "{got}"
    );
    assert_eq!(got["both"], "http/1.1", "{got}");
    let refused = run
        .of_kind("tls")
        .find(|e| e["alpn_offered"] == serde_json::json!(["h2"]))
        .unwrap_or_else(|| panic!("no tls record for the h2-only guest\n{}", run.explain()));
    assert_eq!(refused["mode"], "rejected", "{refused}");
    assert_eq!(refused["refused_by"], "idagent", "{refused}");
    let err = refused["error"].as_str().unwrap_or("");
    assert!(
        err.contains("no application protocol in common") && err.contains("--http1-only"),
        "{refused}"
    );
}

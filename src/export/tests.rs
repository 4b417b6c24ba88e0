use super::*;

const RUN: &str = r#""v":1,"ts":"2026-01-01T00:00:01.5Z","run":"r1""#;

fn export(text: &str) -> (Vec<Value>, ExportStats) {
    let mut out = Vec::new();
    let stats = export_ocsf(Records::new(text.as_bytes()), &mut out).expect("export");
    let events = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON"))
        .collect();
    (events, stats)
}

#[test]
fn classes_type_uid_and_metadata() {
    let text = format!(
        "{{{RUN},\"seq\":1,\"kind\":\"tcp\",\"flow\":3,\"phase\":\"open\",\"src\":\"10.0.0.2:4000\",\"dst\":\"[fd00::1]:443\",\"name\":\"api.example:443\"}}\n\
         {{{RUN},\"seq\":2,\"kind\":\"http\",\"flow\":3,\"method\":\"post\",\"url\":\"https://api.example/v1/x?q=1\",\"status\":503,\"req_headers\":[[\"user-agent\",\"ua\"]],\"resp_headers\":[],\"req_bytes\":1,\"resp_bytes\":2,\"req_sha256\":\"a\",\"resp_sha256\":\"b\",\"req_body\":\"\",\"resp_body\":\"\",\"grpc\":{{\"service\":\"s.S\",\"method\":\"M\",\"req_messages\":1,\"resp_messages\":1}},\"duration_ms\":4}}\n\
         {{{RUN},\"seq\":3,\"kind\":\"decision\",\"layer\":\"connect\",\"verdict\":\"deny\",\"mode\":\"report\",\"rule\":\"default-deny\",\"would_deny\":true,\"request\":{{\"addr\":\"1.2.3.4\",\"port\":443}}}}\n\
         {{{RUN},\"seq\":4,\"kind\":\"blocked\",\"what\":\"udp\",\"target\":\"1.1.1.1:53\",\"reason\":\"offline\",\"repeated\":5}}\n\
         {{{RUN},\"seq\":5,\"kind\":\"gap\",\"dropped\":2,\"reason\":\"queue\"}}\n"
    );
    let (ev, stats) = export(&text);
    assert_eq!(ev.len(), 4);
    let classes: Vec<u64> = ev
        .iter()
        .map(|e| e["class_uid"].as_u64().expect("number"))
        .collect();
    assert_eq!(classes, [4001, 4002, 2004, 4001]);
    for e in &ev {
        let t = e["type_uid"].as_u64().expect("number");
        assert_eq!(
            t,
            e["class_uid"].as_u64().expect("number") * 100
                + e["activity_id"].as_u64().expect("number")
        );
        assert_eq!(e["time"], 1_767_225_601_500i64);
        assert_eq!(e["metadata"]["version"], "1.1.0");
        assert_eq!(e["metadata"]["correlation_uid"], "r1");
    }
    assert_eq!(ev[0]["dst_endpoint"]["ip"], "fd00::1");
    assert_eq!(ev[0]["dst_endpoint"]["hostname"], "api.example");
    // http: endpoints from the flow's tcp open, method activity, failure on 503.
    assert_eq!(ev[1]["activity_id"], 6);
    assert_eq!(ev[1]["src_endpoint"]["ip"], "10.0.0.2");
    assert_eq!(ev[1]["http_request"]["url"]["path"], "/v1/x");
    assert_eq!(ev[1]["http_request"]["user_agent"], "ua");
    assert_eq!(ev[1]["http_response"]["code"], 503);
    assert_eq!(ev[1]["status_id"], 2);
    assert_eq!(ev[1]["unmapped"]["grpc"]["service"], "s.S");
    assert_eq!(ev[1]["metadata"]["uid"], "r1:2");
    // A report-mode would-deny went ahead: allowed, at medium severity.
    assert_eq!(ev[2]["disposition_id"], 1);
    assert_eq!(ev[2]["severity_id"], 3);
    assert_eq!(ev[3]["disposition_id"], 2);
    assert_eq!(ev[3]["count"], 5);
    assert_eq!(stats.skipped.get("gap"), Some(&1));
}

#[test]
fn bad_lines_are_counted_with_their_number() {
    let text = format!(
        "{{{RUN},\"seq\":1,\"kind\":\"exit\",\"pid\":2,\"code\":0}}\nnot json\n{{{RUN},\"seq\":3,\"kind\":\"ex"
    );
    let (ev, stats) = export(&text);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["type_uid"], 100702);
    let lines: Vec<u64> = stats.bad_lines.iter().map(LineError::line).collect();
    assert_eq!(lines, [2, 3]);
    let note = render_note(&stats);
    assert!(note.contains("line 2") && note.contains("line 3"), "{note}");
}

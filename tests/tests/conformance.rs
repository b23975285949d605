//! The box's OpenAPI document against the box itself: schemathesis (from PyPI, installed
//! by `scripts/test`) generates requests from the document, schema-valid and not, and
//! checks every answer: no server error, no status or content type the document does
//! not list, every response body valid against its schema, schema-valid requests not
//! refused as malformed, malformed ones refused. It runs once per caller: anonymous, a
//! student, staff and a manager. The event streams never end, so they are left out of
//! the run and their description is checked here instead.

use serde_json::Value;
use std::process::Command;
use tests::{Api, EdgeProcess, seed_demo};

/// Refusals that depend on the box's data or on several fields together, which no
/// schema can express: a reference to an item, option, slot or payment mode the menu or
/// settings do not have; an idempotency key used before; an amount that is not the
/// order's; hours that end before they start. Schemathesis counts a schema-valid
/// request refused with one of these as a failure (ST202); this test accepts exactly
/// these codes and nothing else.
const DATA_DEPENDENT: &[(&str, &str)] = &[
    // (code, a fragment its message must hold; "" for any message of that code)
    ("unknown_item", ""),
    ("invalid_options", ""),
    ("unknown_pickup_slot", ""),
    ("payment_mode_not_offered", ""),
    ("idempotency_key_reused", ""),
    ("invalid_settings", "no pickup slot"),
    ("invalid_settings", "already exists"),
    ("invalid_settings", "start before it ends"),
    ("invalid_settings", "IANA"),
    ("invalid_menu_item", "min_choices"),
    ("invalid_menu_item", "used twice"),
];

/// Is this error body (one line of the report) a data-dependent refusal?
fn data_dependent(body: &str) -> bool {
    DATA_DEPENDENT.iter().any(|(code, fragment)| {
        body.contains(&format!(r#"{{"error":{{"code":"{code}""#)) && body.contains(fragment)
    })
}

/// The failures of a run's report that are not data-dependent refusals: each entry is
/// the check's line and the error body, if any.
fn unexplained(report: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut operation = String::new();
    let mut flush = |check: Option<String>, body: Option<String>, op: &str| {
        if let Some(check) = check {
            let explained =
                check.starts_with("- ST202") && body.as_deref().is_some_and(data_dependent);
            if !explained {
                out.push(format!("{op}: {check} ({})", body.unwrap_or_default()));
            }
        }
    };
    let mut body: Option<String> = None;
    for line in report.lines() {
        if line.starts_with("___") && line.ends_with("___") {
            flush(current.take(), body.take(), &operation);
            operation = line.trim_matches('_').trim().to_owned();
        } else if line.starts_with("- ST") {
            flush(current.take(), body.take(), &operation);
            current = Some(line.to_owned());
        } else if current.is_some() && body.is_none() && line.contains(r#"{"error":{"code":""#) {
            body = Some(line.trim().to_owned());
        } else if line.starts_with("=====") && line.contains("SUMMARY") {
            flush(current.take(), body.take(), &operation);
        }
    }
    out
}

/// Generated cases per operation and phase: enough to reach every documented refusal
/// of every route, small enough for a 2-core CI machine (about a minute in all).
const EXAMPLES: &str = "10";

fn schemathesis() -> String {
    std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "st".to_owned())
}

fn run(base: &str, token: Option<&str>, who: &str) {
    // Schemathesis keeps a cache of what it found in its working directory: keep that
    // out of the repository.
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(schemathesis());
    cmd.current_dir(scratch.path());
    cmd.args([
        "run",
        &format!("{base}/api/openapi.json"),
        "--checks",
        "all",
        "--phases",
        "coverage,fuzzing",
        "-n",
        EXAMPLES,
        "--generation-deterministic",
        "--no-shrink",
        "--continue-on-failure",
        "--max-failures",
        "100",
        "--exclude-path-regex",
        "/events$",
        "--request-timeout",
        "10",
        "--warnings",
        "off",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}): install schemathesis 4 (`bash scripts/test` does)",
            schemathesis()
        )
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("API Operations"),
        "schemathesis did not finish as {who}:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failures = unexplained(&text);
    assert!(
        failures.is_empty(),
        "conformance failures as {who}:\n{}\n\nthe whole report:\n{text}",
        failures.join("\n")
    );
}

#[test]
fn the_report_reader_tells_data_dependent_refusals_from_real_failures() {
    let report = r#"
___________ POST /api/student/orders ___________
- ST202 Schema-valid request rejected
[422] Unprocessable Content:
    `{"error":{"code":"unknown_item","message":"no menu item"}}`
- ST202 Schema-valid request rejected
[422] Unprocessable Content:
    `{"error":{"code":"invalid_body","message":"unknown field"}}`
- ST202 Schema-valid request rejected
[422] Unprocessable Content:
    `{"error":{"code":"invalid_settings","message":"announcement: too long"}}`
___________ GET /api/menu ___________
- ST103 Undocumented status code
[418] I'm a teapot:
=================================== SUMMARY ====================================
"#;
    let found = unexplained(report);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].contains("invalid_body"), "{found:?}");
    assert!(
        found[1].contains("invalid_settings"),
        "a single-field refusal is not data-dependent: {found:?}"
    );
    assert!(found[2].contains("ST103"), "{found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_answers_as_its_openapi_document_says() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("box");
    seed_demo(&data).unwrap();
    let edge = EdgeProcess::serve(
        &data,
        &[("EDGE_CAMPUS_CARD_SECRET", "conformance-secret-0123456789")],
    )
    .unwrap();
    let api = Api::new(&edge.base);

    let (status, doc) = api.get("/api/openapi.json", None).await.unwrap();
    assert_eq!(status, 200);
    for stream in ["/api/student/events", "/api/staff/events"] {
        let ok = &doc["paths"][stream]["get"]["responses"]["200"]["content"];
        assert!(
            ok.get("text/event-stream").is_some(),
            "{stream} is not described as an event stream: {ok}"
        );
    }
    let codes: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        codes.contains(&"sold_out") && codes.contains(&"closed"),
        "{codes:?}"
    );

    let student = api.student(1).await.unwrap();
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    let manager = api.manager().await.unwrap();
    let base = edge.base.clone();
    tokio::task::spawn_blocking(move || {
        run(&base, None, "anonymous");
        run(&base, Some(&student), "a student");
        run(&base, Some(&staff), "staff");
        run(&base, Some(&manager), "a manager");
    })
    .await
    .unwrap();
}

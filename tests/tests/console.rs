//! Who may do what on the cloud's admin side, against a real cloud process: nothing
//! answers without a login (the JSON API says 401, the console sends the browser to its
//! login page), bearer tokens and session cookies are not interchangeable, a viewer
//! changes nothing, a canteen manager sees and changes only their canteens, console
//! forms without their CSRF token are refused, logins are rate limited, a deactivated
//! admin's sessions end, every action is in the audit log (also as CSV), and the admin
//! listener will not serve beyond loopback without TLS (and serves HTTPS with it).
//! And the console in a real headless Chromium: log in, the fleet, a day's sales (its
//! CSV fetched with the browser's session and parsed), the audit log, log out, with
//! screenshots at 1280×800 in `artifacts/`.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use std::time::Duration;
use tests::world::{RawBox, World, converged, hello_v1, menu_reaches_the_cloud, orders};
use tests::{CLOUD_ADMIN, CloudProcess, cloud_admin, cloud_command, path_str};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Status and JSON body of an admin API call with `token` (if any).
async fn call(
    cloud: &CloudProcess,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("{}{path}", cloud.admin);
    let mut req = match method {
        "GET" => no_redirects().get(url),
        _ => no_redirects().post(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

const API_ROUTES: &[(&str, &str)] = &[
    ("GET", "/nodes"),
    ("GET", "/nodes/canteen-a/summary"),
    ("GET", "/nodes/canteen-a/sync"),
    ("GET", "/nodes/canteen-a/menu"),
    ("POST", "/nodes/canteen-a/menu/edits"),
    ("POST", "/nodes/canteen-a/settings/edits"),
    ("POST", "/accounts"),
    ("GET", "/api/me"),
    ("GET", "/api/audit"),
    ("POST", "/api/logout"),
    ("GET", "/api/fleet"),
    ("GET", "/api/sales"),
    ("GET", "/api/items"),
    ("GET", "/api/reconciliation"),
    ("GET", "/api/menu/pushes"),
    ("POST", "/api/menu/pushes"),
    ("POST", "/api/menu/resolve"),
    ("POST", "/api/accounts/roster"),
    ("POST", "/api/accounts/staff"),
    ("POST", "/api/accounts/deactivate"),
];
const CONSOLE_PAGES: &[&str] = &[
    "/",
    "/fleet.csv",
    "/audit-log",
    "/audit.csv",
    "/sales",
    "/sales.csv",
    "/items",
    "/items.csv",
    "/reconciliation",
    "/reconciliation.csv",
    "/menu",
    "/accounts",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_answers_without_a_login() {
    let w = World::new("canteen-a");
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    for (method, path) in API_ROUTES {
        for token in [None, Some("not-a-token"), Some(&*"f".repeat(64))] {
            let res = {
                let url = format!("{}{path}", cloud.admin);
                let req = if *method == "GET" {
                    no_redirects().get(url)
                } else {
                    no_redirects().post(url).json(&json!([]))
                };
                let req = match token {
                    Some(t) => req.bearer_auth(t),
                    None => req,
                };
                req.send().await.unwrap()
            };
            assert_eq!(res.status(), 401, "{method} {path} with {token:?}");
            assert!(res.headers().contains_key(WWW_AUTHENTICATE), "{path}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "login_required", "{path}");
        }
        // A valid session as a cookie does not open the JSON API.
        let url = format!("{}{path}", cloud.admin);
        let req = if *method == "GET" {
            no_redirects().get(url)
        } else {
            no_redirects().post(url).json(&json!([]))
        };
        let res = req
            .header("cookie", format!("canteen_admin={}", cloud.token))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path} with a cookie");
    }
    for page in CONSOLE_PAGES {
        let res = no_redirects()
            .get(format!("{}{page}", cloud.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "{page}");
        assert_eq!(res.headers()[LOCATION], "/login", "{page}");
        // A bearer token is no console login either.
        let res = no_redirects()
            .get(format!("{}{page}", cloud.admin))
            .bearer_auth(&cloud.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "{page} with a bearer token");
    }
    let res = no_redirects()
        .post(format!("{}/logout", cloud.admin))
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    // And the admin who is logged in gets answers.
    let (status, me) = call(&cloud, "GET", "/api/me", Some(&cloud.token), None).await;
    assert_eq!((status.as_u16(), me["role"].as_str()), (200, Some("admin")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_change_nothing_and_canteen_managers_only_their_canteens() {
    let w = World::new("canteen-a");
    cloud_command(&[
        "enroll",
        "--node-id",
        "canteen-b",
        "--ca-dir",
        path_str(&w.ca),
        "--out",
        path_str(&w.enrol),
    ])
    .unwrap();
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    // canteen-a is a real box with a menu; canteen-b has said hello.
    let edge = w.edge(cloud.quic, "canteen-a", "canteen-a");
    RawBox::connect(cloud.quic, &w.enrol, "canteen-b", &hello_v1("canteen-b"))
        .await
        .unwrap()
        .close()
        .await;
    let api = tests::Api::new(&edge.base);
    let manager = api.manager().await.unwrap();
    let item = api.staff_menu(&manager).await.unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    menu_reaches_the_cloud(&cloud, "canteen-a", &item).await;

    let viewer = cloud_admin(&w.cloud_data, "vera", "vera-password", "viewer", &[]).unwrap();
    let north = cloud_admin(
        &w.cloud_data,
        "mo",
        "mo-password-1",
        "canteen_manager",
        &["canteen-a"],
    )
    .unwrap();
    let rename = json!([{"op": "set_name_en", "item": item, "name": "Noodles (campus)"}]);
    let accounts = json!([]);

    // The viewer reads everything and changes nothing.
    let (status, nodes) = call(&cloud, "GET", "/nodes", Some(&viewer), None).await;
    assert_eq!(status, 200);
    assert_eq!(nodes.as_array().unwrap().len(), 2, "{nodes}");
    for (path, body) in [
        ("/nodes/canteen-a/menu/edits", &rename),
        ("/nodes/canteen-a/settings/edits", &accounts),
        ("/accounts", &accounts),
    ] {
        let (status, refused) = call(&cloud, "POST", path, Some(&viewer), Some(body.clone())).await;
        assert_eq!(status, 403, "viewer {path}: {refused}");
        assert_eq!(refused["error"]["code"], "forbidden");
    }
    let (status, _) = call(&cloud, "GET", "/api/audit", Some(&viewer), None).await;
    assert_eq!(status, 200);
    let push = json!({"item": item, "price_fen": 999});
    let staff = json!({"username": "cook-1", "name": "Cook", "role": "staff",
                       "password": "cook-password-1", "canteens": ["canteen-a"]});
    for (path, body) in [("/api/menu/pushes", &push), ("/api/accounts/staff", &staff)] {
        let (status, refused) = call(&cloud, "POST", path, Some(&viewer), Some(body.clone())).await;
        assert_eq!(status, 403, "viewer {path}: {refused}");
    }
    let resolve =
        json!({"canteen": "canteen-a", "path": ["items", item, "price_fen"], "value": "999"});
    let (status, _) = call(
        &cloud,
        "POST",
        "/api/menu/resolve",
        Some(&viewer),
        Some(resolve),
    )
    .await;
    assert_eq!(status, 403, "viewer settles nothing");

    // The manager of canteen-a sees only it, and changes only it.
    let (_, nodes) = call(&cloud, "GET", "/nodes", Some(&north), None).await;
    let ids: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    assert_eq!(ids, ["canteen-a"]);
    for path in [
        "/nodes/canteen-b/summary",
        "/nodes/canteen-b/menu",
        "/nodes/canteen-b/sync",
    ] {
        let (status, _) = call(&cloud, "GET", path, Some(&north), None).await;
        assert_eq!(status, 403, "{path}");
    }
    let (status, _) = call(
        &cloud,
        "GET",
        "/nodes/canteen-a/summary",
        Some(&north),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &cloud,
        "POST",
        "/nodes/canteen-b/menu/edits",
        Some(&north),
        Some(rename.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(&cloud, "POST", "/accounts", Some(&north), Some(accounts)).await;
    assert_eq!(status, 403, "accounts are campus-wide");
    // Pushes and staff accounts: only their canteen, and no campus-wide push in
    // their name reaches another canteen.
    let to_b = json!({"item": item, "price_fen": 999, "canteens": ["canteen-b"]});
    let (status, _) = call(&cloud, "POST", "/api/menu/pushes", Some(&north), Some(to_b)).await;
    assert_eq!(status, 404, "canteen-b is not theirs to see");
    let cook_b = json!({"username": "cook-b", "name": "Cook", "role": "staff",
                        "password": "cook-password-1", "canteens": ["canteen-b"]});
    let (status, _) = call(
        &cloud,
        "POST",
        "/api/accounts/staff",
        Some(&north),
        Some(cook_b),
    )
    .await;
    assert_eq!(status, 403);
    let everywhere = json!({"item": item, "price_fen": 990});
    let (status, pushed) = call(
        &cloud,
        "POST",
        "/api/menu/pushes",
        Some(&north),
        Some(everywhere),
    )
    .await;
    assert_eq!(status, 201, "{pushed}");
    assert_eq!(pushed["sent"], json!(["canteen-a"]), "{pushed}");
    let (_, pushes) = call(&cloud, "GET", "/api/menu/pushes", Some(&viewer), None).await;
    assert_eq!(
        pushes[0]["targets"].as_array().unwrap().len(),
        1,
        "{pushes}"
    );
    let (status, _) = call(&cloud, "GET", "/api/audit", Some(&north), None).await;
    assert_eq!(status, 403);
    let (status, menu) = call(
        &cloud,
        "POST",
        "/nodes/canteen-a/menu/edits",
        Some(&north),
        Some(rename),
    )
    .await;
    assert_eq!(status, 200, "{menu}");
    assert!(
        menu["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name_en"] == "Noodles (campus)"),
        "{menu}"
    );

    // The audit log has who did what to which canteen, refusals included.
    let (_, log) = call(&cloud, "GET", "/api/audit", Some(&cloud.token), None).await;
    let has = |who: &str, action: &str, canteen: Option<&str>, ok: bool| {
        log.as_array().unwrap().iter().any(|e| {
            e["username"] == who
                && e["action"] == action
                && canteen.is_none_or(|c| e["canteens"][0] == c)
                && (e["result"] == "ok") == ok
        })
    };
    assert!(has("mo", "menu.edit", Some("canteen-a"), true), "{log}");
    assert!(has("mo", "menu.edit", Some("canteen-b"), false), "{log}");
    assert!(has("vera", "accounts.push", None, false), "{log}");
    assert!(
        has("(shell)", "admin.add", Some("canteen-a"), true),
        "{log}"
    );

    // A deactivated admin's tokens stop working at once.
    cloud_command(&[
        "admin",
        "deactivate",
        "--username",
        "mo",
        "--data-dir",
        path_str(&w.cloud_data),
    ])
    .unwrap();
    let (status, _) = call(&cloud, "GET", "/nodes", Some(&north), None).await;
    assert_eq!(status, 401);
    drop(edge);
}

/// A console page (no redirects followed) with the cookies `cookie`.
async fn console_get(url: String, cookie: impl AsRef<str>) -> reqwest::Response {
    no_redirects()
        .get(url)
        .header("cookie", cookie.as_ref())
        .send()
        .await
        .unwrap()
}

/// The hidden `csrf` field of the first form on `html`.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// `name=value` of the `Set-Cookie` named `name`, with its attributes.
fn set_cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_logins_forms_and_csv() {
    let w = World::new("canteen-a");
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    RawBox::connect(cloud.quic, &w.enrol, "canteen-a", &hello_v1("canteen-a"))
        .await
        .unwrap()
        .close()
        .await;
    let http = no_redirects();
    let base = &cloud.admin;

    let page = http.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let login_cookie = cookie_pair(&set_cookie(&page, "canteen_login_csrf").unwrap());
    let html = page.text().await.unwrap();
    let login_csrf = csrf_of(&html);
    let (user, password) = CLOUD_ADMIN;

    let post_login = |cookie: Option<&str>, form: Vec<(&'static str, String)>| {
        let mut req = http.post(format!("{base}/login")).form(&form);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move { req.send().await.unwrap() }
    };
    let with_token = |password: &str| {
        vec![
            ("csrf", login_csrf.clone()),
            ("username", user.to_owned()),
            ("password", password.to_owned()),
        ]
    };
    // The login form without its token (a form posted from elsewhere) is refused.
    let res = post_login(
        None,
        vec![
            ("username", user.to_owned()),
            ("password", password.to_owned()),
        ],
    )
    .await;
    assert_eq!(res.status(), 403);
    assert!(set_cookie(&res, "canteen_admin").is_none());
    // A wrong password says so and logs nobody in.
    let res = post_login(Some(&login_cookie), with_token("wrong-password")).await;
    assert_eq!(res.status(), 401);
    assert!(set_cookie(&res, "canteen_admin").is_none());
    let res = post_login(Some(&login_cookie), with_token(password)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()[LOCATION], "/");
    let session = set_cookie(&res, "canteen_admin").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(
        !session.contains("Secure"),
        "plain HTTP on loopback: {session}"
    );
    let session = cookie_pair(&session);

    let fleet = console_get(format!("{base}/"), &session).await;
    assert_eq!(fleet.status(), 200);
    let csp = fleet.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let html = fleet.text().await.unwrap();
    assert!(html.contains("canteen-a"), "{html}");
    let csrf = csrf_of(&html);
    assert!(
        html.contains("<h1>Fleet</h1>"),
        "English by default: {html}"
    );

    // 简体中文: chosen with ?lang=zh (and remembered), or asked for by the browser.
    let zh = console_get(format!("{base}/?lang=zh"), &session).await;
    let remembered = cookie_pair(&set_cookie(&zh, "canteen_console_lang").unwrap());
    let html = zh.text().await.unwrap();
    assert!(
        html.contains("lang=\"zh-CN\"")
            && html.contains("<h1>食堂概览</h1>")
            && html.contains("<th>食堂</th>"),
        "{html}"
    );
    let again = http
        .get(format!("{base}/"))
        .header("cookie", format!("{session}; {remembered}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(again.contains("<h1>食堂概览</h1>"), "remembered: {again}");
    let asked = http
        .get(format!("{base}/"))
        .header("cookie", &session)
        .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.5")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        asked.contains("<h1>食堂概览</h1>"),
        "Accept-Language: {asked}"
    );

    let csv_text = console_get(format!("{base}/fleet.csv"), &session)
        .await
        .text()
        .await
        .unwrap();
    let mut rows = csv::Reader::from_reader(csv_text.as_bytes());
    assert_eq!(&rows.headers().unwrap()[0], "canteen");
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][0], "canteen-a");
    assert!(
        rows[0][2].starts_with("20") && rows[0][2].len() == 19,
        "last contact as a UTC time: {:?}",
        &rows[0][2]
    );

    // Logging out needs the session's token; without it nothing happens.
    for bad in ["", "0123", &*login_csrf] {
        let res = http
            .post(format!("{base}/logout"))
            .header("cookie", &session)
            .form(&[("csrf", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "csrf {bad:?}");
    }
    let still = console_get(format!("{base}/audit-log"), &session).await;
    assert_eq!(still.status(), 200);
    let res = http
        .post(format!("{base}/logout"))
        .header("cookie", &session)
        .form(&[("csrf", &*csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let gone = console_get(format!("{base}/"), &session).await;
    assert_eq!(gone.status(), 303, "the session ended");

    // The audit log, as CSV: the failed and the good login, and the logout.
    let csv_text = reqwest::Client::new()
        .get(format!("{base}/api/audit"))
        .bearer_auth(&cloud.token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let actions: Vec<(String, String)> = csv_text
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("logout".into(), "ok".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("login".into(), "ok".into())),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|(a, r)| a == "login" && r.starts_with("bad_credentials")),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_rate_limited_per_user() {
    let w = World::new("canteen-a");
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    let login = |password: &'static str| {
        let url = format!("{}/api/login", cloud.admin);
        async move {
            let res = reqwest::Client::new()
                .post(url)
                .json(&json!({"username": CLOUD_ADMIN.0, "password": password}))
                .send()
                .await
                .unwrap();
            let status = res.status();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    for _ in 0..5 {
        let (status, body) = login("guessing-wrong").await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "bad_credentials");
    }
    // The sixth attempt within the minute is refused before the password is checked,
    // even the right one.
    let (status, body) = login(CLOUD_ADMIN.1).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_logins");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try again in"),
        "{body}"
    );
    assert!(body.get("token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_needs_tls_beyond_loopback() {
    let w = World::new("canteen-a");
    // Refused before it listens: nothing is bound beyond loopback.
    let out = tests::cloud_command_for(&w.cloud_data)
        .args([
            "serve",
            "--data-dir",
            path_str(&w.cloud_data),
            "--ca-dir",
            path_str(&w.ca),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not on loopback") && err.contains("--admin-tls-cert"),
        "{err}"
    );

    // With a certificate from the campus CA it serves HTTPS, and its cookies are
    // Secure.
    cloud_admin(&w.cloud_data, CLOUD_ADMIN.0, CLOUD_ADMIN.1, "admin", &[]).unwrap();
    let tls = w.dir.path().join("console-tls");
    cloud_command(&[
        "enroll",
        "--node-id",
        "console",
        "--ca-dir",
        path_str(&w.ca),
        "--out",
        path_str(&tls),
        "--https-name",
        "127.0.0.1",
    ])
    .unwrap();
    let mut child = tests::cloud_command_for(&w.cloud_data)
        .args([
            "serve",
            "--data-dir",
            path_str(&w.cloud_data),
            "--ca-dir",
            path_str(&w.ca),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-tls-cert",
            path_str(&tls.join("console-https.pem")),
            "--admin-tls-key",
            path_str(&tls.join("console-https.key")),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let base = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("admin listening on ").map(str::to_owned))
    })
    .await
    .unwrap()
    .expect("the admin address");
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(tls.join("ca.pem")).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let page = https.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let login_cookie = set_cookie(&page, "canteen_login_csrf").unwrap();
    assert!(login_cookie.contains("; Secure"), "{login_cookie}");
    let csrf = csrf_of(&page.text().await.unwrap());
    let res = https
        .post(format!("{base}/login"))
        .header("cookie", cookie_pair(&login_cookie))
        .form(&[
            ("csrf", &*csrf),
            ("username", CLOUD_ADMIN.0),
            ("password", CLOUD_ADMIN.1),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let session = set_cookie(&res, "canteen_admin").unwrap();
    assert!(
        session.contains("; Secure") && session.contains("HttpOnly"),
        "{session}"
    );
    // Plain HTTP to the TLS port gets no page.
    let plain = base.replace("https://", "http://");
    assert!(
        reqwest::Client::new()
            .get(format!("{plain}/login"))
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .is_err()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Fen as the console writes money.
fn yuan(fen: i64) -> String {
    format!(
        "{}¥{}.{:02}",
        if fen < 0 { "-" } else { "" },
        fen.abs() / 100,
        fen.abs() % 100
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_days_sales_equal_the_boxs_own_totals() {
    let w = World::new("canteen-a");
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    let edge = w.edge(cloud.quic, "canteen-a", "canteen-a");
    let api = tests::Api::new(&edge.base);
    orders(&api, 24).await;
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    converged(&api, &staff, &cloud, "canteen-a").await;
    let (_, mine) = api.get("/api/staff/summary", Some(&staff)).await.unwrap();
    let day = mine["service_day"].as_str().unwrap().to_owned();

    let (status, sales) = call(
        &cloud,
        "GET",
        &format!("/api/sales?day={day}"),
        Some(&cloud.token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{sales}");
    let row = &sales["canteens"][0];
    assert_eq!(row["canteen"], "canteen-a");
    assert_eq!(row["orders"], mine["orders"]);
    assert_eq!(row["revenue_fen"], mine["revenue_fen"]);
    assert_eq!(row["refunds_fen"], mine["refunds_fen"]);
    let state = |s: &str| mine["by_state"][s].as_i64().unwrap_or(0);
    assert_eq!(row["cancelled"].as_i64(), Some(state("cancelled")));
    let tickets: i64 = ["paid", "preparing", "ready", "picked_up", "unclaimed"]
        .iter()
        .map(|s| state(s))
        .sum();
    assert_eq!(row["tickets"].as_i64(), Some(tickets));
    let revenue = mine["revenue_fen"].as_i64().unwrap();
    assert!(revenue > 0 && tickets > 0);
    assert_eq!(row["average_ticket_fen"].as_i64(), Some(revenue / tickets));
    assert_eq!(sales["campus"]["revenue_fen"], mine["revenue_fen"]);
    let hourly: Vec<i64> = sales["hourly"][0]["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_i64().unwrap())
        .collect();
    assert_eq!(hourly.len(), 24);
    assert_eq!(Some(hourly.iter().sum::<i64>()), mine["orders"].as_i64());
    assert_eq!(sales["hourly"][0]["time_zone"], "Asia/Shanghai");
    // Without a day: the latest day with orders.
    let (_, latest) = call(&cloud, "GET", "/api/sales", Some(&cloud.token), None).await;
    assert_eq!(latest["day"], day.as_str());
    // A day that is not one is refused (it would match every day).
    let (status, refused) = call(
        &cloud,
        "GET",
        "/api/sales?day=%25",
        Some(&cloud.token),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["code"], "bad_day");
    let (status, _) = call(
        &cloud,
        "GET",
        "/nodes/canteen-a/summary?day=2026-__-__",
        Some(&cloud.token),
        None,
    )
    .await;
    assert_eq!(status, 400);

    // The console's CSV has the same figures, money in yuan.
    let csv_text = no_redirects()
        .get(format!("{}/sales.csv?day={day}", cloud.admin))
        .header("cookie", format!("canteen_admin={}", cloud.token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "canteen-a and the campus: {csv_text}");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][col("canteen")], "canteen-a");
    assert_eq!(&rows[0][col("revenue")], yuan(revenue));
    assert_eq!(&rows[1][col("canteen")], "campus");
    assert_eq!(&rows[1][col("orders")], mine["orders"].to_string());

    // Dishes: the ranking holds the box's own item totals, most sold first, by name;
    // the sold-out board what staff marked sold out, and when it came back.
    let manager = api.manager().await.unwrap();
    let menu = api.staff_menu(&manager).await.unwrap();
    let id = |i: usize| menu[i]["id"].as_str().unwrap().to_owned();
    for (item, action) in [(id(1), "sold_out"), (id(1), "back"), (id(2), "sold_out")] {
        let (status, body) = api
            .post(
                &format!("/api/staff/stock/{item}"),
                Some(&staff),
                &json!({ "action": action }),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{action}: {body}");
    }
    converged(&api, &staff, &cloud, "canteen-a").await;
    let (status, items) = call(
        &cloud,
        "GET",
        &format!("/api/items?day={day}"),
        Some(&cloud.token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{items}");
    let ranking = items["ranking"].as_array().unwrap();
    let box_items = mine["items"].as_array().unwrap();
    assert_eq!(ranking.len(), box_items.len(), "{items}");
    for it in box_items {
        let ranked = ranking
            .iter()
            .find(|r| r["item_id"] == it["item_id"])
            .unwrap_or_else(|| panic!("{it} not ranked"));
        assert_eq!(ranked["quantity"], it["quantity"]);
        assert_eq!(ranked["revenue_fen"], it["revenue_fen"]);
        let named = menu.iter().find(|m| m["id"] == it["item_id"]).unwrap();
        assert_eq!(ranked["name_en"], named["name_en"]);
    }
    let quantities: Vec<i64> = ranking
        .iter()
        .map(|r| r["quantity"].as_i64().unwrap())
        .collect();
    assert!(
        quantities.windows(2).all(|w| w[0] >= w[1]),
        "{quantities:?}"
    );
    let board = items["sold_out"].as_array().unwrap();
    let entry = |item: &str| board.iter().find(|e| e["item_id"] == item).cloned();
    let came_back = entry(&id(1)).expect("the first dish on the board");
    assert!(came_back["back_at"].is_string(), "{came_back}");
    let still = entry(&id(2)).expect("the second dish on the board");
    assert!(
        still["back_at"].is_null() && still["since"].is_string(),
        "{still}"
    );
    assert_eq!(still["name_en"], menu[2]["name_en"]);
    drop(edge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_uses_the_console_in_a_browser() -> anyhow::Result<()> {
    use tests::browser::Browser;
    let w = World::new("canteen-a");
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    // Its status every second, so the fleet shows it current.
    let mut env = tests::FAST_ENV.to_vec();
    env.push(("EDGE_CLOUD_STATUS_S", "1"));
    let edge = w.edge_of(cloud.quic, "canteen-a", &w.box_data, &env);
    let api = tests::Api::new(&edge.base);
    orders(&api, 12).await;
    let staff = api.staff("staff", "staff-pass").await?;
    converged(&api, &staff, &cloud, "canteen-a").await;
    let (_, mine) = api.get("/api/staff/summary", Some(&staff)).await?;
    let revenue = mine["revenue_fen"].as_i64().unwrap_or_default();

    // A student the browser deactivates later.
    let (status, _) = post_roster(
        &cloud,
        &cloud.token,
        "student_number,name,pin\n2099501,Feng Lan,246810\n",
    )
    .await;
    assert_eq!(status, 200);
    let browser = Browser::open(&cloud.admin, (1280, 800)).await?;
    let outcome = async {
        // Any page sends a browser without a session to the login page.
        browser.goto("/sales").await?;
        browser
            .wait("the login page", "return location.pathname === '/login'")
            .await?;
        browser.type_into("input[name=username]", CLOUD_ADMIN.0).await?;
        browser.type_into("input[name=password]", CLOUD_ADMIN.1).await?;
        browser.screenshot("console-login.png").await?;
        browser.click("button[type=submit]").await?;
        browser
            .wait(
                "the fleet",
                "return location.pathname === '/' && document.querySelector('table.data tbody td')?.textContent",
            )
            .await?;
        anyhow::ensure!(browser.text("table.data tbody td").await? == "canteen-a");
        browser.screenshot("console-fleet.png").await?;
        // The fleet refreshes itself in place (the vendored htmx, under the console's
        // CSP), showing what the box reported.
        let first = browser.js("return document.getElementById('fleet').dataset.at").await?;
        let first = first.as_str().unwrap_or_default().to_owned();
        browser
            .wait("htmx", "return typeof htmx !== 'undefined' && htmx.version === '2.0.4'")
            .await?;
        browser
            .wait(
                "the fleet refreshed in place",
                &format!("return document.getElementById('fleet').dataset.at !== '{first}'"),
            )
            .await?;
        browser
            .wait(
                "the box's status on the fleet",
                "return [...document.querySelectorAll('#fleet td')].some((td) => td.textContent.includes('menu: applied'))",
            )
            .await?;
        browser.goto("/?lang=zh").await?;
        browser
            .wait("the fleet in Chinese", "return document.querySelector('h1').textContent === '食堂概览'")
            .await?;
        browser.screenshot("console-fleet-zh.png").await?;
        browser.goto("/?lang=en").await?;

        browser.click("nav a[href='/sales']").await?;
        let campus = browser
            .wait(
                "the sales table",
                "const rows = document.querySelectorAll('table.data tbody tr'); \
                 return rows.length === 2 && rows[1].cells[2].textContent",
            )
            .await?;
        anyhow::ensure!(campus == json!(yuan(revenue)), "campus revenue {campus}");
        // The orders-per-hour chart is drawn, from every order of the day.
        browser
            .wait("the chart", "return document.querySelector('#orders-chart canvas')?.width > 0")
            .await?;
        let charted = browser
            .js("return JSON.parse(document.getElementById('orders-per-hour').textContent)[0].orders.reduce((a, b) => a + b, 0)")
            .await?;
        anyhow::ensure!(charted == mine["orders"], "charted {charted} orders");
        browser.screenshot("console-sales.png").await?;
        // The CSV link works with the browser's own session.
        let csv_text = browser
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 fetch(document.querySelector('a[download]').href).then((r) => r.text()).then(done);",
                vec![],
            )
            .await?;
        let csv_text = csv_text.as_str().unwrap_or_default().to_owned();
        let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
        anyhow::ensure!(
            rows.len() == 2 && &rows[0][0] == "canteen-a" && rows[1][2] == yuan(revenue),
            "the CSV: {csv_text}"
        );

        browser.click("nav a[href='/items']").await?;
        browser
            .wait(
                "the dish ranking",
                "return location.pathname === '/items' && document.querySelectorAll('table.data tbody tr').length > 0",
            )
            .await?;
        browser.screenshot("console-dishes.png").await?;

        // Reconciliation: the box's own totals of the day beside the cloud's.
        browser.click("nav a[href='/reconciliation']").await?;
        browser
            .wait(
                "the reconciliation",
                "return location.pathname === '/reconciliation' && [...document.querySelectorAll('#reconciliation tbody td')].some((td) => td.textContent === 'canteen-a')",
            )
            .await?;
        browser.screenshot("console-reconciliation.png").await?;

        // A dish pushed to the canteen from the menu page.
        browser.click("nav a[href='/menu']").await?;
        browser.wait("the menu page", "return !!document.querySelector('#menu-push')").await?;
        browser.type_into("#menu-push input[name=name_zh]", "清炒时蔬").await?;
        browser.type_into("#menu-push input[name=name_en]", "Greens").await?;
        browser.type_into("#menu-push input[name=category]", "Sides").await?;
        browser.type_into("#menu-push input[name=price_fen]", "600").await?;
        browser.click("#menu-push input[name=canteen][value=canteen-a]").await?;
        browser.click("#menu-push button[type=submit]").await?;
        browser
            .wait(
                "the push listed",
                "return document.querySelector('p.ok')?.textContent.includes('canteen-a') && document.querySelector('tr[data-canteen=canteen-a]')?.dataset.state",
            )
            .await?;
        browser.screenshot("console-menu.png").await?;

        // An account deactivated from the accounts page.
        browser.click("nav a[href='/accounts']").await?;
        browser
            .wait("the accounts page", "return !!document.querySelector('form[action=\"/accounts/deactivate\"]')")
            .await?;
        browser
            .js("document.querySelector('form[action=\"/accounts/deactivate\"] select[name=role]').value = 'student'; return true")
            .await?;
        browser
            .type_into("form[action=\"/accounts/deactivate\"] input[name=login]", "2099501")
            .await?;
        browser.click("form[action=\"/accounts/deactivate\"] button[type=submit]").await?;
        browser
            .wait("the deactivation saved", "return document.querySelector('p.ok')?.textContent.includes('1')")
            .await?;

        browser.click("nav a[href='/audit-log']").await?;
        browser
            .wait(
                "the audit log",
                "const cells = [...document.querySelectorAll('table.data tbody td')].map((td) => td.textContent); \
                 return ['login', 'menu.push', 'account.deactivate'].every((a) => cells.includes(a))",
            )
            .await?;
        browser.screenshot("console-audit.png").await?;

        browser.click("form.logout button").await?;
        browser
            .wait("the login page again", "return location.pathname === '/login'")
            .await?;
        browser.goto("/").await?;
        browser
            .wait("no way back in", "return location.pathname === '/login'")
            .await?;
        Ok(())
    }
    .await;
    browser.close().await;
    drop(edge);
    outcome
}

/// The fleet's alerts for `node`, by code (the fleet must list `node`: an empty answer
/// is not "no alerts").
async fn alert_codes(cloud: &CloudProcess, node: &str) -> Vec<String> {
    let (status, fleet) = call(cloud, "GET", "/api/fleet", Some(&cloud.token), None).await;
    assert_eq!(status, 200, "{fleet}");
    let row = fleet
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["node_id"] == node))
        .unwrap_or_else(|| panic!("{node} not in the fleet: {fleet}"));
    row["alerts"]
        .as_array()
        .unwrap_or_else(|| panic!("no alerts list: {row}"))
        .iter()
        .filter_map(|x| x["code"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_cut_off_during_opening_hours_raises_an_alert_that_clears() {
    let w = World::new("canteen-a");
    let cloud = CloudProcess::serve_with(
        &w.cloud_data,
        &w.ca,
        "127.0.0.1:0".parse().unwrap(),
        &w.log("cloud.log"),
        &[("CLOUD_ALERT_SILENT_SECONDS", "1")],
    )
    .unwrap();
    let edge = w.edge(cloud.quic, "canteen-a", "canteen-a");
    // Open around the clock, so that the test's hour is within opening hours.
    let all_day: Vec<Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| json!({"op": "set_hours", "day": d, "open": "00:00", "close": "23:59", "closed": false}))
        .collect();
    let (status, body) = call(
        &cloud,
        "POST",
        "/nodes/canteen-a/settings/edits",
        Some(&cloud.token),
        Some(Value::Array(all_day)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tests::eventually("the box connected", Duration::from_secs(60), || async {
        let (_, fleet) = call(&cloud, "GET", "/api/fleet", Some(&cloud.token), None).await;
        Ok((fleet[0]["connected"] == true).then_some(()))
    })
    .await
    .unwrap();
    assert!(alert_codes(&cloud, "canteen-a").await.is_empty());

    // Cut off: once the cloud notices, the silence raises the alert, on the page too.
    edge.kill_9();
    tests::eventually("the silent alert", Duration::from_secs(90), || async {
        Ok(alert_codes(&cloud, "canteen-a")
            .await
            .contains(&"silent".to_owned())
            .then_some(()))
    })
    .await
    .unwrap();
    let page = no_redirects()
        .get(format!("{}/", cloud.admin))
        .header("cookie", format!("canteen_admin={}", cloud.token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("during opening hours"), "{page}");

    // Back: the alert clears.
    let edge = w.edge(cloud.quic, "canteen-a", "canteen-a");
    tests::eventually("the alert to clear", Duration::from_secs(60), || async {
        Ok(alert_codes(&cloud, "canteen-a")
            .await
            .is_empty()
            .then_some(()))
    })
    .await
    .unwrap();
    drop(edge);
}

/// Posts `csv` as a roster with `token`.
async fn post_roster(cloud: &CloudProcess, token: &str, csv: &str) -> (StatusCode, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/api/accounts/roster", cloud.admin))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The box's answer to a student login.
async fn student_login(api: &tests::Api, number: &str, pin: &str) -> (u16, Value) {
    api.post(
        "/api/student/login",
        None,
        &json!({"student_number": number, "pin": pin}),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_issued_at_the_console_reach_the_box_and_deactivation_ends_sessions() {
    let w = World::new("canteen-a");
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    let edge = w.edge(cloud.quic, "canteen-a", "canteen-a");
    let api = tests::Api::new(&edge.base);
    let viewer = cloud_admin(&w.cloud_data, "vera", "vera-password", "viewer", &[]).unwrap();

    // A roster with one bad row stores nothing, and says which line.
    let bad = "student_number,name,pin\n2099001,Zhao Lei,246810\n2099002,Qian Yu,12\n";
    let (status, refused) = post_roster(&cloud, &cloud.token, bad).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "bad_roster");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 3"),
        "{refused}"
    );
    let (status, _) = post_roster(&cloud, &viewer, bad).await;
    assert_eq!(status, 403, "a viewer issues nothing");

    let good = "student_number,name,pin\n2099001,Zhao Lei,246810\n2099002, Qian Yu ,135246\n";
    let (status, issued) = post_roster(&cloud, &cloud.token, good).await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["accounts"], 2);
    let (status, staff) = call(
        &cloud,
        "POST",
        "/api/accounts/staff",
        Some(&cloud.token),
        Some(json!({"username": "counter-9", "name": "Sun Mei", "role": "staff", "password": "counter-pass-9", "canteens": ["canteen-a"]})),
    )
    .await;
    assert_eq!(status, 200, "{staff}");
    let (status, weak) = call(
        &cloud,
        "POST",
        "/api/accounts/staff",
        Some(&cloud.token),
        Some(json!({"username": "counter-10", "name": "Li", "role": "staff", "password": "short", "canteens": ["canteen-a"]})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), weak["error"]["code"].as_str()),
        (422, Some("bad_account"))
    );

    // The box takes them on its next sync: the PIN and password typed at the cloud work.
    let token = tests::eventually("the roster at the box", Duration::from_secs(60), || async {
        let (status, body) = student_login(&api, "2099001", "246810").await;
        Ok((status == 200).then(|| body["token"].as_str().unwrap_or_default().to_owned()))
    })
    .await
    .unwrap();
    api.staff("counter-9", "counter-pass-9").await.unwrap();
    let (status, _) = student_login(&api, "2099002", "135246").await;
    assert_eq!(status, 200);

    // Deactivated at the cloud: the box refuses the login and the open session.
    let (status, body) = call(
        &cloud,
        "POST",
        "/api/accounts/deactivate",
        Some(&cloud.token),
        Some(json!({"role": "student", "login": "2099001"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tests::eventually(
        "the deactivation at the box",
        Duration::from_secs(60),
        || async {
            let (status, _) = api.get("/api/student/orders", Some(&token)).await?;
            Ok((status == 401).then_some(()))
        },
    )
    .await
    .unwrap();
    let (status, _) = student_login(&api, "2099001", "246810").await;
    assert_ne!(status, 200);
    let (status, _) = student_login(&api, "2099002", "135246").await;
    assert_eq!(status, 200, "the other student is untouched");
    let (status, missing) = call(
        &cloud,
        "POST",
        "/api/accounts/deactivate",
        Some(&cloud.token),
        Some(json!({"role": "student", "login": "2099999"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), missing["error"]["code"].as_str()),
        (404, Some("no_such_account"))
    );

    // The console's roster form needs its CSRF token, and then imports.
    let session = format!("canteen_admin={}", cloud.token);
    let http = no_redirects();
    let res = http
        .post(format!("{}/accounts/roster", cloud.admin))
        .header("cookie", &session)
        .form(&[("csv", "student_number,name,pin\n2099003,Sun Li,864202\n")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let page = console_get(format!("{}/accounts", cloud.admin), &session)
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page[page.find("/accounts/roster").unwrap()..]);
    let res = http
        .post(format!("{}/accounts/roster", cloud.admin))
        .header("cookie", &session)
        .form(&[
            ("csrf", csrf.as_str()),
            ("csv", "student_number,name,pin\n2099003,Sun Li,864202\n"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.text().await.unwrap().contains("1 account"),
        "the page says what it saved"
    );
    tests::eventually(
        "the form's student at the box",
        Duration::from_secs(60),
        || async { Ok((student_login(&api, "2099003", "864202").await.0 == 200).then_some(())) },
    )
    .await
    .unwrap();
    // Every issue is in the audit log.
    let (_, log) = call(&cloud, "GET", "/api/audit", Some(&cloud.token), None).await;
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in ["roster.import", "staff.save", "account.deactivate"] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
    drop(edge);
}

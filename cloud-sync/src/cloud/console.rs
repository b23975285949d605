//! The campus console: server-rendered pages (maud), no script, nothing from the
//! internet (`Content-Security-Policy: default-src 'self'`). Today: the login page,
//! the fleet (every canteen the admin may see, with its link state), a business day's
//! sales per canteen side by side, and the audit log, each table also as CSV. Every form carries a CSRF token: the login form a
//! double-submit cookie, the others the session's token.

use super::admin::{DayQuery, audit, audit_entries, may_read_audit, start_session, visible_nodes};
use super::admins::AdminAccount;
use super::auth::{AdminError, AdminState, ConsoleCaller, LOGIN_CSRF_COOKIE, cookie, cookie_value};
use super::sales::{Sales, SalesRow, yuan};
use super::server::Cloud;
use axum::Form;
use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use std::net::SocketAddr;

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/", get(fleet))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/fleet.csv", get(fleet_csv))
        .route("/sales", get(sales_page))
        .route("/sales.csv", get(sales_csv))
        .route("/audit-log", get(audit_page))
        .route("/audit.csv", get(audit_csv))
        .route("/console.css", get(stylesheet))
        .route("/console.js", get(script))
        .route("/vendor/uplot.js", get(uplot_js))
        .route("/vendor/uplot.css", get(uplot_css))
}

const CSP: &str = "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A page with the console's headers.
fn page(
    status: StatusCode,
    title: &str,
    who: Option<(&AdminAccount, &str)>,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · canteen cloud" }
                link rel="stylesheet" href="/vendor/uplot.css";
                link rel="stylesheet" href="/console.css";
                script src="/vendor/uplot.js" defer {}
                script src="/console.js" defer {}
            }
            body {
                @if let Some((account, csrf)) = who {
                    header {
                        nav {
                            a href="/" { "Fleet" }
                            a href="/sales" { "Sales" }
                            @if account.may_read_campus() { a href="/audit-log" { "Audit log" } }
                        }
                        form method="post" action="/logout" class="logout" {
                            span { (account.username) " (" (account.role.as_str()) ")" }
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    let mut res = (status, markup.into_string()).into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn login_form(status: StatusCode, error: Option<&str>, secure: bool) -> Response {
    let (csrf, _) = super::admins::new_token();
    let mut res = page(
        status,
        "Log in",
        None,
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label { "User name " input name="username" autocomplete="username" required; }
                label { "Password " input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Log in" }
            }
        },
    );
    if let Ok(v) = HeaderValue::from_str(&cookie(LOGIN_CSRF_COOKIE, &csrf, 3600, secure)) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

async fn login_page(State(state): State<AdminState>) -> Response {
    login_form(StatusCode::OK, None, state.auth.options.tls)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    username: String,
    password: String,
}

async fn login(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let secure = state.auth.options.tls;
    let expected = cookie_value(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if form.csrf.is_empty() || form.csrf != expected {
        return login_form(
            StatusCode::FORBIDDEN,
            Some("The form expired or did not come from this console: try again."),
            secure,
        );
    }
    match start_session(&state, peer.ip(), &form.username, &form.password).await {
        Ok((token, _, _, _)) => {
            let mut res = Redirect::to("/").into_response();
            for c in [
                state.auth.session_cookie(&token),
                cookie(LOGIN_CSRF_COOKIE, "", 0, secure),
            ] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    res.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            res
        }
        Err(e) => login_form(e.status, Some(&e.message), secure),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AdminState>,
    caller: ConsoleCaller,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AdminError> {
    caller.check_csrf(&form.csrf)?;
    let store = state.cloud.store.clone();
    let digest = caller.token_digest.clone();
    let result = tokio::task::spawn_blocking(move || store.session_delete(&digest))
        .await
        .map_err(|e| AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
        .and_then(|r| {
            r.map_err(|e| {
                AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })
        });
    audit(
        &state.cloud,
        &caller.account.username,
        "logout",
        &[],
        &result,
        String::new(),
    )
    .await;
    result?;
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&state.auth.session_cookie("")) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// Rows of a table: its header and its cells, for the page and the CSV alike.
struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn html(&self) -> Markup {
        html! {
            table .data {
                thead { tr { @for h in &self.header { th { (h) } } } }
                tbody {
                    @for row in &self.rows { tr { @for cell in row { td { (cell) } } } }
                }
            }
        }
    }

    fn csv(&self, file: &str) -> Result<Response, AdminError> {
        let mut out = csv::Writer::from_writer(Vec::new());
        let internal =
            |e: String| AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e);
        out.write_record(&self.header)
            .map_err(|e| internal(e.to_string()))?;
        for row in &self.rows {
            out.write_record(row).map_err(|e| internal(e.to_string()))?;
        }
        let bytes = out.into_inner().map_err(|e| internal(e.to_string()))?;
        let mut res = bytes.into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
        Ok(res)
    }
}

async fn fleet_table(cloud: &Cloud, account: &AdminAccount) -> Result<Table, AdminError> {
    let nodes = visible_nodes(cloud, account).await?;
    Ok(Table {
        header: vec![
            "canteen",
            "connected",
            "last contact (UTC)",
            "events acknowledged",
            "timeline",
        ],
        rows: nodes
            .into_iter()
            .map(|n| {
                vec![
                    n.node_id,
                    if n.connected { "yes" } else { "no" }.into(),
                    n.last_seen.unwrap_or_else(|| "never".into()),
                    n.acked_seq.to_string(),
                    n.timeline.to_string(),
                ]
            })
            .collect(),
    })
}

async fn fleet(State(cloud): State<Cloud>, caller: ConsoleCaller) -> Result<Response, AdminError> {
    let table = fleet_table(&cloud, &caller.account).await?;
    Ok(page(
        StatusCode::OK,
        "Fleet",
        Some((&caller.account, &caller.csrf)),
        html! {
            p { a href="/fleet.csv" download { "Download as CSV" } }
            @if table.rows.is_empty() { p { "No canteen has connected yet." } }
            @else { (table.html()) }
        },
    ))
}

async fn fleet_csv(
    State(cloud): State<Cloud>,
    caller: ConsoleCaller,
) -> Result<Response, AdminError> {
    fleet_table(&cloud, &caller.account).await?.csv("fleet.csv")
}

fn sales_table(sales: &Sales) -> Table {
    let row = |r: &SalesRow| {
        vec![
            r.canteen.clone(),
            r.orders.to_string(),
            yuan(r.revenue_fen),
            r.tickets.to_string(),
            yuan(r.average_ticket_fen),
            yuan(r.refunds_fen),
            r.cancelled.to_string(),
            r.expired.to_string(),
            r.unclaimed.to_string(),
        ]
    };
    Table {
        header: vec![
            "canteen",
            "orders",
            "revenue",
            "tickets",
            "average ticket",
            "refunds",
            "cancelled",
            "expired",
            "unclaimed",
        ],
        rows: sales
            .canteens
            .iter()
            .chain(std::iter::once(&sales.campus))
            .map(row)
            .collect(),
    }
}

async fn sales_page(
    State(cloud): State<Cloud>,
    caller: ConsoleCaller,
    Query(q): Query<DayQuery>,
) -> Result<Response, AdminError> {
    let sales = super::sales::sales(&cloud, &caller.account, q.day).await?;
    let table = sales_table(&sales);
    let day = sales.day.clone().unwrap_or_default();
    Ok(page(
        StatusCode::OK,
        "Sales",
        Some((&caller.account, &caller.csrf)),
        html! {
            form method="get" action="/sales" class="day" {
                label { "Business day " input type="date" name="day" value=(day); }
                button type="submit" { "Show" }
            }
            @if sales.day.is_none() { p { "No canteen has sold anything yet." } }
            @else {
                p { a href={ "/sales.csv?day=" (day) } download { "Download as CSV" } }
                (table.html())
                h2 { "Orders per hour (each canteen's local time)" }
                div #orders-chart .chart data-chart="orders-per-hour" {}
                script #orders-per-hour type="application/json" { (json_block(&sales.hourly)) }
            }
        },
    ))
}

async fn sales_csv(
    State(cloud): State<Cloud>,
    caller: ConsoleCaller,
    Query(q): Query<DayQuery>,
) -> Result<Response, AdminError> {
    let sales = super::sales::sales(&cloud, &caller.account, q.day).await?;
    let file = format!("sales-{}.csv", sales.day.as_deref().unwrap_or("none"));
    sales_table(&sales).csv(&file)
}

async fn audit_table(cloud: &Cloud, account: &AdminAccount) -> Result<Table, AdminError> {
    may_read_audit(account)?;
    let entries = audit_entries(cloud).await?;
    Ok(Table {
        header: vec![
            "when (UTC)",
            "who",
            "action",
            "canteens",
            "result",
            "detail",
        ],
        rows: entries
            .into_iter()
            .map(|e| {
                vec![
                    utc_text(e.at_ms),
                    e.username,
                    e.action,
                    e.canteens.join(" "),
                    e.result,
                    e.detail,
                ]
            })
            .collect(),
    })
}

/// `2026-12-06 12:00:00` from Unix milliseconds.
fn utc_text(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

async fn audit_page(
    State(cloud): State<Cloud>,
    caller: ConsoleCaller,
) -> Result<Response, AdminError> {
    let table = audit_table(&cloud, &caller.account).await?;
    Ok(page(
        StatusCode::OK,
        "Audit log",
        Some((&caller.account, &caller.csrf)),
        html! {
            p { a href="/audit.csv" download { "Download as CSV" } }
            (table.html())
        },
    ))
}

async fn audit_csv(
    State(cloud): State<Cloud>,
    caller: ConsoleCaller,
) -> Result<Response, AdminError> {
    audit_table(&cloud, &caller.account).await?.csv("audit.csv")
}

/// JSON for a `<script type="application/json">` block: never closes the element.
fn json_block(value: &impl serde::Serialize) -> maud::PreEscaped<String> {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    maud::PreEscaped(json.replace('<', "\\u003c"))
}

/// A static file of the console, cached for an hour.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    res
}

async fn stylesheet() -> Response {
    asset(include_str!("console.css"), "text/css; charset=utf-8")
}

async fn script() -> Response {
    asset(include_str!("console.js"), "text/javascript; charset=utf-8")
}

async fn uplot_js() -> Response {
    asset(
        include_str!("vendor/uplot/uPlot.iife.min.js"),
        "text/javascript; charset=utf-8",
    )
}

async fn uplot_css() -> Response {
    asset(
        include_str!("vendor/uplot/uPlot.min.css"),
        "text/css; charset=utf-8",
    )
}

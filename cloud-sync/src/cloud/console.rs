//! The campus console: server-rendered pages (maud), no script, nothing from the
//! internet (`Content-Security-Policy: default-src 'self'`). Today: the login page,
//! the fleet (every canteen the admin may see, with its link state), a business day's
//! sales per canteen side by side, and the audit log, each table also as CSV. Every form carries a CSRF token: the login form a
//! double-submit cookie, the others the session's token.

use super::admin::{DayQuery, audit_entries, end_session, may_read_audit, start_session};
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
        .route("/items", get(items_page))
        .route("/accounts", get(accounts_get))
        .route("/accounts/roster", axum::routing::post(accounts_roster))
        .route("/accounts/staff", axum::routing::post(accounts_staff))
        .route(
            "/accounts/deactivate",
            axum::routing::post(accounts_deactivate),
        )
        .route("/items.csv", get(items_csv))
        .route("/reconciliation", get(reconciliation_page))
        .route("/reconciliation.csv", get(reconciliation_csv))
        .route("/menu", get(menu_page))
        .route("/menu/push", axum::routing::post(menu_push))
        .route("/menu/resolve", axum::routing::post(menu_resolve))
        .route("/audit-log", get(audit_page))
        .route("/audit.csv", get(audit_csv))
        .route("/console.css", get(stylesheet))
        .route("/console.js", get(script))
        .route("/vendor/uplot.js", get(uplot_js))
        .route("/vendor/htmx.js", get(htmx_js))
        .route("/vendor/uplot.css", get(uplot_css))
}

/// The console's language: `?lang=zh|en` (remembered in a cookie), else the cookie,
/// else the browser's `Accept-Language`. CSV files keep English headers, for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lang {
    zh: bool,
    /// Chosen by `?lang=` on this request: remember it.
    chosen: bool,
}

const LANG_COOKIE: &str = "canteen_console_lang";

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let asked = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("lang="))
                .map(|v| v.starts_with("zh"))
        });
        let remembered = cookie_value(&parts.headers, LANG_COOKIE).map(|v| v == "zh");
        let accepted = parts
            .headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("zh"));
        Ok(Self {
            zh: asked.or(remembered).unwrap_or(accepted),
            chosen: asked.is_some(),
        })
    }
}

/// The console's texts in 简体中文; anything not listed shows in English.
const ZH: &[(&str, &str)] = &[
    ("canteen cloud", "食堂云端"),
    ("Fleet", "食堂概览"),
    ("Sales", "销售"),
    ("Audit log", "操作日志"),
    ("Log in", "登录"),
    ("Log out", "退出"),
    ("User name", "用户名"),
    ("Password", "密码"),
    ("Download as CSV", "下载 CSV"),
    ("Business day", "营业日"),
    ("Reconciliation", "对账"),
    ("Menu", "菜单"),
    ("business day", "营业日"),
    ("state", "状态"),
    (
        "box: orders / revenue / refunds / cancelled / expired / unclaimed",
        "终端：订单 / 收入 / 退款 / 取消 / 过期 / 未取",
    ),
    (
        "cloud: orders / revenue / refunds / cancelled / expired / unclaimed",
        "云端：订单 / 收入 / 退款 / 取消 / 过期 / 未取",
    ),
    ("box counted through event", "终端统计至事件"),
    ("cloud holds through event", "云端已收至事件"),
    ("complete up to event", "完整至事件"),
    ("late events", "迟到事件"),
    (
        "Each box reports its own totals of its recent business days; a day the box has moved past is closed when the cloud's totals match it. Events of a closed day that arrive later are counted as late.",
        "各终端上报最近营业日的自有合计；终端已进入下一营业日、且云端合计与之一致时，该日即对账完成。之后才到达的该日事件记为迟到。",
    ),
    ("applied", "已应用"),
    ("conflicting", "有冲突"),
    ("sent", "已发送"),
    (
        "Create or change a dish at chosen canteens",
        "在选定食堂新建或修改菜品",
    ),
    (
        "Leave a field empty to keep it as it is at each canteen. A canteen without the dish gets it added (both names, category and price needed). A price alone is a campus-wide price change.",
        "留空的字段在各食堂保持不变。没有该菜品的食堂会新增它（需要中英文名称、类别和价格）。只填价格即为全校统一调价。",
    ),
    ("Dish id (empty: a new dish)", "菜品编号（留空：新菜品）"),
    ("Chinese name", "中文名"),
    ("English name", "英文名"),
    ("Category", "类别"),
    ("Price (fen)", "价格（分）"),
    (
        "Daily quota (empty: keep; 0 or more; \"none\": unlimited)",
        "每日限量（留空：不变；0 或以上；\"none\"：不限）",
    ),
    ("Available", "供应"),
    (
        "Canteens (none checked: every canteen you may change):",
        "食堂（不勾选：您可修改的所有食堂）：",
    ),
    ("Push", "推送"),
    ("Pushes", "推送记录"),
    ("No pushes yet.", "还没有推送。"),
    ("dish", "菜品"),
    ("conflicts", "冲突"),
    ("Keep", "保留"),
    (
        "Kept; the box receives it on its next sync.",
        "已保留；终端在下次同步时收到。",
    ),
    ("Staff account of chosen canteens", "指定食堂的员工账户"),
    (
        "Works at (a login of one canteen does not work at another):",
        "所属食堂（一个食堂的账户不能在其他食堂登录）：",
    ),
    (
        "Only campus admins import rosters and deactivate accounts.",
        "只有全校管理员可以导入学生名单和停用账户。",
    ),
    ("events waiting at the box", "待上传事件"),
    ("oldest waiting (s)", "最早待传（秒）"),
    ("clock offset (s)", "时钟偏差（秒）"),
    ("software / schema / protocol", "软件 / 数据库 / 协议版本"),
    ("documents applied", "文档应用情况"),
    ("not reported", "未上报"),
    ("to (optional)", "至（可选）"),
    ("Show", "查看"),
    ("No canteen has connected yet.", "还没有食堂连接过。"),
    ("No canteen has sold anything yet.", "还没有任何销售。"),
    (
        "Orders per hour (each canteen's local time)",
        "每小时订单数（各食堂当地时间）",
    ),
    (
        "The form expired or did not come from this console: try again.",
        "表单已过期或并非来自本控制台，请重试。",
    ),
    ("canteen", "食堂"),
    ("connected", "在线"),
    ("last contact (UTC)", "最后联系（UTC）"),
    ("events acknowledged", "已确认事件"),
    ("timeline", "时间线"),
    ("alerts", "警报"),
    ("Dishes", "菜品"),
    ("Accounts", "账户"),
    ("Import a student roster", "导入学生名单"),
    (
        "CSV with the header student_number,name,pin (checked whole before anything is stored)",
        "CSV，表头为 student_number,name,pin（全部检查通过后才保存）",
    ),
    ("Import", "导入"),
    ("Name", "姓名"),
    ("Role", "角色"),
    ("Save", "保存"),
    ("Deactivate an account", "停用账户"),
    ("Student number or user name", "学号或用户名"),
    ("Deactivate", "停用"),
    ("Ranking", "销量排行"),
    ("Sold out", "售罄"),
    ("Nothing sold out that day.", "当天没有售罄的菜品。"),
    ("dish", "菜品"),
    ("quantity", "数量"),
    ("sold out since (UTC)", "售罄时间（UTC）"),
    ("back at (UTC)", "恢复时间（UTC）"),
    ("still sold out", "仍售罄"),
    ("orders", "订单"),
    ("revenue", "营业额"),
    ("tickets", "成交单数"),
    ("average ticket", "客单价"),
    ("refunds", "退款"),
    ("cancelled", "已取消"),
    ("expired", "已过期"),
    ("unclaimed", "未取餐"),
    ("when (UTC)", "时间（UTC）"),
    ("who", "操作人"),
    ("action", "操作"),
    ("canteens", "食堂"),
    ("result", "结果"),
    ("detail", "详情"),
    ("yes", "是"),
    ("no", "否"),
    ("never", "从未"),
    ("campus", "全校"),
];

/// `en` in the console's language.
pub fn tr(lang: Lang, en: &'static str) -> &'static str {
    if lang.zh {
        ZH.iter().find(|(e, _)| *e == en).map_or(en, |(_, z)| z)
    } else {
        en
    }
}

const CSP: &str = "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A page with the console's headers.
fn page(
    status: StatusCode,
    lang: Lang,
    title: &'static str,
    who: Option<(&AdminAccount, &str)>,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang=(if lang.zh { "zh-CN" } else { "en" }) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (tr(lang, title)) " · " (tr(lang, "canteen cloud")) }
                link rel="stylesheet" href="/vendor/uplot.css";
                link rel="stylesheet" href="/console.css";
                // htmx without its injected styles and without eval: the CSP holds.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                script src="/vendor/htmx.js" defer {}
                script src="/vendor/uplot.js" defer {}
                script src="/console.js" defer {}
            }
            body {
                @if let Some((account, csrf)) = who {
                    header {
                        nav {
                            a href="/" { (tr(lang, "Fleet")) }
                            a href="/sales" { (tr(lang, "Sales")) }
                            a href="/items" { (tr(lang, "Dishes")) }
                            a href="/reconciliation" { (tr(lang, "Reconciliation")) }
                            a href="/menu" { (tr(lang, "Menu")) }
                            a href="/accounts" { (tr(lang, "Accounts")) }
                            @if account.may_read_campus() { a href="/audit-log" { (tr(lang, "Audit log")) } }
                        }
                        form method="post" action="/logout" class="logout" {
                            span { (account.username) " (" (account.role.as_str()) ")" }
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { (tr(lang, "Log out")) }
                        }
                    }
                }
                main {
                    p.languages { a href="?lang=zh" lang="zh-CN" { "中文" } " | " a href="?lang=en" lang="en" { "English" } }
                    h1 { (tr(lang, title)) }
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
    if lang.chosen {
        let value = if lang.zh { "zh" } else { "en" };
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{LANG_COOKIE}={value}; Path=/; SameSite=Strict; Max-Age=31536000"
        )) {
            headers.append(header::SET_COOKIE, v);
        }
    }
    res
}

fn login_form(status: StatusCode, lang: Lang, error: Option<&str>, secure: bool) -> Response {
    let (csrf, _) = super::admins::new_token();
    let mut res = page(
        status,
        lang,
        "Log in",
        None,
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label { (tr(lang, "User name")) " " input name="username" autocomplete="username" required; }
                label { (tr(lang, "Password")) " " input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { (tr(lang, "Log in")) }
            }
        },
    );
    if let Ok(v) = HeaderValue::from_str(&cookie(LOGIN_CSRF_COOKIE, &csrf, 3600, secure)) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

async fn login_page(State(state): State<AdminState>, lang: Lang) -> Response {
    login_form(StatusCode::OK, lang, None, state.auth.options.tls)
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
    lang: Lang,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let secure = state.auth.options.tls;
    let expected = cookie_value(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if form.csrf.is_empty() || form.csrf != expected {
        return login_form(
            StatusCode::FORBIDDEN,
            lang,
            Some(tr(
                lang,
                "The form expired or did not come from this console: try again.",
            )),
            secure,
        );
    }
    match start_session(&state, peer.ip(), &form.username, &form.password).await {
        Ok((token, _, _)) => {
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
        Err(e) => login_form(e.status, lang, Some(&e.message), secure),
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
    end_session(&state.cloud, &caller.account.username, &caller.token_digest).await?;
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&state.auth.session_cookie("")) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// A table cell: data as it is, or a word of the console's language.
enum Cell {
    Data(String),
    Word(&'static str),
}

impl Cell {
    fn text(&self, lang: Option<Lang>) -> &str {
        match (self, lang) {
            (Cell::Data(s), _) => s,
            (Cell::Word(w), Some(lang)) => tr(lang, w),
            (Cell::Word(w), None) => w,
        }
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Data(s)
    }
}

/// The business-day picker of a page at `action`: one day, or a range with `to`.
fn day_picker(lang: Lang, action: &str, day: &str, to: &str) -> Markup {
    html! {
        form method="get" action=(action) class="day" {
            label { (tr(lang, "Business day")) " " input type="date" name="day" value=(day); }
            " "
            label { (tr(lang, "to (optional)")) " " input type="date" name="to" value=(to); }
            button type="submit" { (tr(lang, "Show")) }
        }
    }
}

/// The query string of the days a page shows (`day=…` or `day=…&to=…`).
fn days_query(day: &Option<String>, to: &Option<String>) -> String {
    match (day, to) {
        (Some(d), Some(t)) if d != t => format!("day={d}&to={t}"),
        (Some(d), _) => format!("day={d}"),
        _ => String::new(),
    }
}

/// A CSV file's name for the days shown.
fn days_file(what: &str, day: &Option<String>, to: &Option<String>) -> String {
    match (day, to) {
        (Some(d), Some(t)) if d != t => format!("{what}-{d}-to-{t}.csv"),
        (Some(d), _) => format!("{what}-{d}.csv"),
        _ => format!("{what}-none.csv"),
    }
}

/// The link to a table's CSV.
fn csv_link(lang: Lang, href: &str) -> Markup {
    html! { p { a href=(href) download { (tr(lang, "Download as CSV")) } } }
}

/// Rows of a table: its header and its cells, for the page and the CSV alike.
struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    fn html(&self, lang: Lang) -> Markup {
        html! {
            table .data {
                thead { tr { @for h in &self.header { th { (tr(lang, h)) } } } }
                tbody {
                    @for row in &self.rows { tr { @for cell in row { td { (cell.text(Some(lang))) } } } }
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
            out.write_record(row.iter().map(|c| c.text(None)))
                .map_err(|e| internal(e.to_string()))?;
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

/// The fleet with its alerts, in `lang` (`None`: English, for CSV).
async fn fleet_table(
    state: &AdminState,
    account: &AdminAccount,
    lang: Option<Lang>,
) -> Result<Table, AdminError> {
    let rows = super::fleet::fleet(&state.cloud, account, state.auth.options.alerts).await?;
    let zh = lang.is_some_and(|l| l.zh);
    Ok(Table {
        header: vec![
            "canteen",
            "connected",
            "last contact (UTC)",
            "events acknowledged",
            "events waiting at the box",
            "oldest waiting (s)",
            "clock offset (s)",
            "software / schema / protocol",
            "documents applied",
            "timeline",
            "alerts",
        ],
        rows: rows
            .into_iter()
            .map(|row| {
                let alerts: Vec<String> = row.alerts.iter().map(|a| a.text(zh)).collect();
                let unknown = || Cell::Word("not reported");
                let documents: Vec<String> = row
                    .documents
                    .iter()
                    .map(|d| {
                        let state = match (d.applied, zh) {
                            (true, false) => "applied",
                            (true, true) => "已应用",
                            (false, false) => "pending",
                            (false, true) => "待应用",
                        };
                        format!("{}: {state}", d.doc)
                    })
                    .collect();
                let status = row.status.as_ref();
                let n = row.node;
                vec![
                    n.node_id.into(),
                    Cell::Word(if n.connected { "yes" } else { "no" }),
                    // Stored as Unix seconds.
                    n.last_seen
                        .and_then(|secs| secs.parse::<i64>().ok())
                        .map_or(Cell::Word("never"), |secs| {
                            Cell::Data(utc_text(secs.saturating_mul(1000)))
                        }),
                    n.acked_seq.to_string().into(),
                    row.waiting_events
                        .map_or_else(unknown, |w| w.to_string().into()),
                    match (status, row.oldest_waiting_s) {
                        (None, _) => unknown(),
                        (Some(_), None) => Cell::Data("0".into()),
                        (Some(_), Some(s)) => s.to_string().into(),
                    },
                    status.map_or_else(unknown, |s| {
                        format!("{:+.1}", s.clock_offset_ms as f64 / 1000.0).into()
                    }),
                    match status {
                        Some(s) => {
                            format!("{} / {} / {}", s.software, s.schema, row.protocol).into()
                        }
                        None if row.protocol > 0 => format!("protocol {}", row.protocol).into(),
                        None => unknown(),
                    },
                    if documents.is_empty() {
                        unknown()
                    } else {
                        documents.join("; ").into()
                    },
                    n.timeline.to_string().into(),
                    alerts.join("; ").into(),
                ]
            })
            .collect(),
    })
}

async fn fleet(
    State(state): State<AdminState>,
    lang: Lang,
    caller: ConsoleCaller,
) -> Result<Response, AdminError> {
    let table = fleet_table(&state, &caller.account, Some(lang)).await?;
    Ok(page(
        StatusCode::OK,
        lang,
        "Fleet",
        Some((&caller.account, &caller.csrf)),
        html! {
            (csv_link(lang, "/fleet.csv"))
            // Refreshed in place (htmx) every few seconds: the fleet is live.
            div #fleet hx-get="/" hx-select="#fleet" hx-trigger="every 5s" hx-swap="outerHTML"
                data-at=(super::auth::now_ms()) {
                @if table.rows.is_empty() { p { (tr(lang, "No canteen has connected yet.")) } }
                @else { (table.html(lang)) }
            }
        },
    ))
}

async fn fleet_csv(
    State(state): State<AdminState>,
    caller: ConsoleCaller,
) -> Result<Response, AdminError> {
    fleet_table(&state, &caller.account, None)
        .await?
        .csv("fleet.csv")
}

fn sales_table(sales: &Sales) -> Table {
    let row = |r: &SalesRow| {
        vec![
            if r.canteen == "campus" {
                Cell::Word("campus")
            } else {
                Cell::Data(r.canteen.clone())
            },
            r.orders.to_string().into(),
            yuan(r.revenue_fen).into(),
            r.tickets.to_string().into(),
            yuan(r.average_ticket_fen).into(),
            yuan(r.refunds_fen).into(),
            r.cancelled.to_string().into(),
            r.expired.to_string().into(),
            r.unclaimed.to_string().into(),
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
    lang: Lang,
    caller: ConsoleCaller,
    Query(q): Query<DayQuery>,
) -> Result<Response, AdminError> {
    let sales = super::sales::sales(&cloud, &caller.account, q.day, q.to).await?;
    let table = sales_table(&sales);
    let day = sales.day.clone().unwrap_or_default();
    let to = sales.to.clone().filter(|t| *t != day).unwrap_or_default();
    Ok(page(
        StatusCode::OK,
        lang,
        "Sales",
        Some((&caller.account, &caller.csrf)),
        html! {
            (day_picker(lang, "/sales", &day, &to))
            @if sales.day.is_none() { p { (tr(lang, "No canteen has sold anything yet.")) } }
            @else {
                (csv_link(lang, &format!("/sales.csv?{}", days_query(&sales.day, &sales.to))))
                (table.html(lang))
                h2 { (tr(lang, "Orders per hour (each canteen's local time)")) }
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
    let sales = super::sales::sales(&cloud, &caller.account, q.day, q.to).await?;
    let file = days_file("sales", &sales.day, &sales.to);
    sales_table(&sales).csv(&file)
}

/// A dish's name in the console's language.
fn dish(lang: Option<Lang>, zh: &str, en: &str) -> String {
    if lang.is_some_and(|l| l.zh) { zh } else { en }.to_owned()
}

/// `2026-12-06 12:00:00` from an RFC 3339 time (as given if it is not one).
fn rfc3339_utc(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .map_or_else(|_| at.to_owned(), |t| utc_text(t.timestamp_millis()))
}

fn items_tables(items: &super::items::Items, lang: Option<Lang>) -> (Table, Table) {
    let ranking = Table {
        header: vec!["dish", "canteen", "quantity", "revenue"],
        rows: items
            .ranking
            .iter()
            .map(|r| {
                vec![
                    dish(lang, &r.name_zh, &r.name_en).into(),
                    r.canteen.clone().into(),
                    r.quantity.to_string().into(),
                    yuan(r.revenue_fen).into(),
                ]
            })
            .collect(),
    };
    let sold_out = Table {
        header: vec!["dish", "canteen", "sold out since (UTC)", "back at (UTC)"],
        rows: items
            .sold_out
            .iter()
            .map(|s| {
                vec![
                    dish(lang, &s.name_zh, &s.name_en).into(),
                    s.canteen.clone().into(),
                    rfc3339_utc(&s.since).into(),
                    s.back_at
                        .as_deref()
                        .map_or(Cell::Word("still sold out"), |t| Cell::Data(rfc3339_utc(t))),
                ]
            })
            .collect(),
    };
    (ranking, sold_out)
}

async fn items_page(
    State(cloud): State<Cloud>,
    lang: Lang,
    caller: ConsoleCaller,
    Query(q): Query<DayQuery>,
) -> Result<Response, AdminError> {
    let items = super::items::items(&cloud, &caller.account, q.day, q.to).await?;
    let (ranking, sold_out) = items_tables(&items, Some(lang));
    let day = items.day.clone().unwrap_or_default();
    let to = items.to.clone().filter(|t| *t != day).unwrap_or_default();
    Ok(page(
        StatusCode::OK,
        lang,
        "Dishes",
        Some((&caller.account, &caller.csrf)),
        html! {
            (day_picker(lang, "/items", &day, &to))
            @if items.day.is_none() { p { (tr(lang, "No canteen has sold anything yet.")) } }
            @else {
                (csv_link(lang, &format!("/items.csv?{}", days_query(&items.day, &items.to))))
                h2 { (tr(lang, "Ranking")) }
                (ranking.html(lang))
                h2 { (tr(lang, "Sold out")) }
                @if sold_out.rows.is_empty() { p { (tr(lang, "Nothing sold out that day.")) } }
                @else { div #sold-out { (sold_out.html(lang)) } }
            }
        },
    ))
}

/// The ranking as CSV (the sold-out board is on the page and in `/api/items`).
async fn items_csv(
    State(cloud): State<Cloud>,
    caller: ConsoleCaller,
    Query(q): Query<DayQuery>,
) -> Result<Response, AdminError> {
    let items = super::items::items(&cloud, &caller.account, q.day, q.to).await?;
    let file = days_file("dishes", &items.day, &items.to);
    items_tables(&items, None).0.csv(&file)
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
                    utc_text(e.at_ms).into(),
                    e.username.into(),
                    e.action.into(),
                    e.canteens.join(" ").into(),
                    e.result.into(),
                    e.detail.into(),
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

fn recon_table(rows: &[super::store::ReconRow], lang: Option<Lang>) -> Table {
    let zh = lang.is_some_and(|l| l.zh);
    let totals = |t: &crate::proto::DayTotals| {
        format!(
            "{} / {} / {} / {} / {} / {}",
            t.orders,
            yuan(t.revenue_fen),
            yuan(t.refunds_fen),
            t.cancelled,
            t.expired,
            t.unclaimed
        )
    };
    Table {
        header: vec![
            "business day",
            "canteen",
            "state",
            "box: orders / revenue / refunds / cancelled / expired / unclaimed",
            "cloud: orders / revenue / refunds / cancelled / expired / unclaimed",
            "box counted through event",
            "cloud holds through event",
            "complete up to event",
            "late events",
        ],
        rows: rows
            .iter()
            .map(|r| {
                let state = match (r.state, zh) {
                    ("closed", false) => "closed: complete",
                    ("closed", true) => "已对账：完整",
                    ("matches", false) => "matches (day not over)",
                    ("matches", true) => "一致（营业日未结束）",
                    ("in_transit", false) => "events still on the way",
                    ("in_transit", true) => "事件仍在上传",
                    ("differs", false) => "DIFFERS",
                    ("differs", true) => "不一致",
                    (_, false) => "no report from the box",
                    (_, true) => "终端未上报",
                };
                vec![
                    r.day.clone().into(),
                    r.canteen.clone().into(),
                    Cell::Data(state.to_owned()),
                    r.box_totals
                        .as_ref()
                        .map_or(Cell::Word("not reported"), |t| totals(t).into()),
                    totals(&r.cloud_totals).into(),
                    r.box_totals
                        .as_ref()
                        .map_or(Cell::Word("not reported"), |t| {
                            t.through_seq.to_string().into()
                        }),
                    r.cloud_acked_seq.to_string().into(),
                    r.complete_through
                        .map_or(Cell::Data(String::new()), |n| n.to_string().into()),
                    r.late_events.to_string().into(),
                ]
            })
            .collect(),
    }
}

async fn reconciliation_page(
    State(cloud): State<Cloud>,
    lang: Lang,
    caller: ConsoleCaller,
    Query(q): Query<DayQuery>,
) -> Result<Response, AdminError> {
    let query = days_query(&q.day, &q.to);
    let (day, to) = (
        q.day.clone().unwrap_or_default(),
        q.to.clone().unwrap_or_default(),
    );
    let rows = super::reconciliation::reconciliation(&cloud, &caller.account, q.day, q.to).await?;
    let table = recon_table(&rows, Some(lang));
    Ok(page(
        StatusCode::OK,
        lang,
        "Reconciliation",
        Some((&caller.account, &caller.csrf)),
        html! {
            p { (tr(lang, "Each box reports its own totals of its recent business days; a day the box has moved past is closed when the cloud's totals match it. Events of a closed day that arrive later are counted as late.")) }
            (day_picker(lang, "/reconciliation", &day, &to))
            @if rows.is_empty() { p { (tr(lang, "No canteen has sold anything yet.")) } }
            @else {
                (csv_link(lang, &format!("/reconciliation.csv?{query}")))
                div #reconciliation { (table.html(lang)) }
            }
        },
    ))
}

async fn reconciliation_csv(
    State(cloud): State<Cloud>,
    caller: ConsoleCaller,
    Query(q): Query<DayQuery>,
) -> Result<Response, AdminError> {
    let file = days_file("reconciliation", &q.day, &q.to);
    let rows = super::reconciliation::reconciliation(&cloud, &caller.account, q.day, q.to).await?;
    recon_table(&rows, None).csv(&file)
}

/// The menu page: a dish change pushed to chosen canteens, and the newest pushes with
/// each canteen's state and conflicts (each value can be kept).
async fn menu_page_with(
    cloud: &Cloud,
    lang: Lang,
    caller: &ConsoleCaller,
    outcome: Option<Result<String, AdminError>>,
) -> Result<Response, AdminError> {
    let pushes = super::menus::pushes(cloud, &caller.account).await?;
    let canteens = changeable_canteens(cloud, caller).await?;
    let status = match &outcome {
        Some(Err(e)) => e.status,
        _ => StatusCode::OK,
    };
    let state_word = |s: &str| match s {
        "applied" => tr(lang, "applied"),
        "conflicting" => tr(lang, "conflicting"),
        _ => tr(lang, "sent"),
    };
    Ok(page(
        status,
        lang,
        "Menu",
        Some((&caller.account, &caller.csrf)),
        html! {
            @match &outcome {
                Some(Ok(message)) => p.ok role="status" { (message) },
                Some(Err(e)) => p.error role="alert" { (e.message) },
                None => {},
            }
            @if !canteens.is_empty() {
                h2 { (tr(lang, "Create or change a dish at chosen canteens")) }
                p { (tr(lang, "Leave a field empty to keep it as it is at each canteen. A canteen without the dish gets it added (both names, category and price needed). A price alone is a campus-wide price change.")) }
                form method="post" action="/menu/push" #menu-push {
                    input type="hidden" name="csrf" value=(caller.csrf);
                    label { (tr(lang, "Dish id (empty: a new dish)")) " " input name="item" size="38"; }
                    label { (tr(lang, "Chinese name")) " " input name="name_zh"; }
                    label { (tr(lang, "English name")) " " input name="name_en"; }
                    label { (tr(lang, "Category")) " " input name="category"; }
                    label { (tr(lang, "Price (fen)")) " " input name="price_fen" type="number" min="0"; }
                    label { (tr(lang, "Daily quota (empty: keep; 0 or more; \"none\": unlimited)")) " " input name="daily_quota"; }
                    label { (tr(lang, "Available")) " "
                        select name="available" { option value="" { "–" } option value="true" { (tr(lang, "yes")) } option value="false" { (tr(lang, "no")) } }
                    }
                    p { (tr(lang, "Canteens (none checked: every canteen you may change):")) }
                    (canteen_boxes("canteen", &canteens))
                    button type="submit" { (tr(lang, "Push")) }
                }
            }
            h2 { (tr(lang, "Pushes")) }
            // Each canteen's state refreshes in place as boxes apply the pushes.
            div #pushes hx-get="/menu" hx-select="#pushes" hx-trigger="every 5s" hx-swap="outerHTML" {
            @if pushes.is_empty() { p { (tr(lang, "No pushes yet.")) } }
            @for p in &pushes {
                section.push data-push=(p.push.push_id) {
                    h3 { (utc_text(p.push.at_ms)) " UTC · " (p.push.username) " · " (tr(lang, "dish")) " " code { (p.push.item_id) } }
                    p { code { (p.push.change) } }
                    table.data {
                        thead { tr { th { (tr(lang, "canteen")) } th { (tr(lang, "state")) } th { (tr(lang, "conflicts")) } } }
                        tbody {
                            @for t in &p.targets {
                                tr data-canteen=(t.canteen) data-state=(t.state) {
                                    td { (t.canteen) }
                                    td { (state_word(t.state)) }
                                    td {
                                        @for c in &t.conflicts {
                                            div.conflict {
                                                span { (c.path.last().map(String::as_str).unwrap_or("")) ": " }
                                                @for v in &c.values {
                                                    form method="post" action="/menu/resolve" class="inline" {
                                                        input type="hidden" name="csrf" value=(caller.csrf);
                                                        input type="hidden" name="canteen" value=(t.canteen);
                                                        input type="hidden" name="path" value=(c.path.join("/"));
                                                        input type="hidden" name="value" value=(v);
                                                        button type="submit" { (tr(lang, "Keep")) " " (v) }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            }
        },
    ))
}

async fn menu_page(
    State(cloud): State<Cloud>,
    lang: Lang,
    caller: ConsoleCaller,
) -> Result<Response, AdminError> {
    menu_page_with(&cloud, lang, &caller, None).await
}

/// The push form's fields as a dish change (a field left empty is unchanged).
fn dish_change(form: &Fields) -> Result<super::menus::DishChange, AdminError> {
    let bad = |m: String| AdminError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_change", m);
    let item = form
        .given("item")
        .map(|i| {
            i.parse()
                .map_err(|_| bad(format!("dish id {i:?} is not a UUID")))
        })
        .transpose()?;
    let price_fen = form
        .given("price_fen")
        .map(|p| {
            p.parse()
                .map_err(|_| bad(format!("price {p:?} is not a whole number of fen")))
        })
        .transpose()?;
    let daily_quota = match form.given("daily_quota").as_deref() {
        None => None,
        Some("none") => Some(None),
        Some(q) => Some(Some(q.parse().map_err(|_| {
            bad(format!("quota {q:?}: a whole number, or \"none\""))
        })?)),
    };
    let available = match form.given("available").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => return Err(bad(format!("available {other:?}"))),
    };
    Ok(super::menus::DishChange {
        item,
        canteens: form.all("canteen"),
        name_zh: form.given("name_zh"),
        name_en: form.given("name_en"),
        category: form.given("category"),
        price_fen,
        daily_quota,
        available,
    })
}

async fn menu_push(
    State(cloud): State<Cloud>,
    lang: Lang,
    caller: ConsoleCaller,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, AdminError> {
    let form = Fields(form);
    caller.check_csrf(&form.one("csrf"))?;
    let outcome = match dish_change(&form) {
        Ok(change) => super::menus::push(&cloud, &caller.account, change)
            .await
            .map(|o| {
                let refused: Vec<String> = o
                    .refused
                    .iter()
                    .map(|(c, why)| format!("{c}: {why}"))
                    .collect();
                if lang.zh {
                    format!(
                        "菜品 {} 已推送到 {}。{}",
                        o.item,
                        o.sent.join("、"),
                        refused.join("；")
                    )
                } else {
                    format!(
                        "Dish {} pushed to {}. {}",
                        o.item,
                        o.sent.join(", "),
                        refused.join("; ")
                    )
                }
            }),
        Err(e) => Err(e),
    };
    menu_page_with(&cloud, lang, &caller, Some(outcome)).await
}

async fn menu_resolve(
    State(cloud): State<Cloud>,
    lang: Lang,
    caller: ConsoleCaller,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, AdminError> {
    let form = Fields(form);
    caller.check_csrf(&form.one("csrf"))?;
    let path: Vec<String> = form.one("path").split('/').map(str::to_owned).collect();
    let outcome = super::menus::resolve(
        &cloud,
        &caller.account,
        form.one("canteen"),
        path,
        form.one("value"),
    )
    .await
    .map(|()| tr(lang, "Kept; the box receives it on its next sync.").to_owned());
    menu_page_with(&cloud, lang, &caller, Some(outcome)).await
}

async fn audit_page(
    State(cloud): State<Cloud>,
    lang: Lang,
    caller: ConsoleCaller,
) -> Result<Response, AdminError> {
    let table = audit_table(&cloud, &caller.account).await?;
    Ok(page(
        StatusCode::OK,
        lang,
        "Audit log",
        Some((&caller.account, &caller.csrf)),
        html! {
            (csv_link(lang, "/audit.csv"))
            (table.html(lang))
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

async fn htmx_js() -> Response {
    asset(
        include_str!("vendor/htmx/htmx.min.js"),
        "text/javascript; charset=utf-8",
    )
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

#[derive(Deserialize)]
struct RosterForm {
    #[serde(default)]
    csrf: String,
    csv: String,
}

/// A form's fields in order, repeated names (checkboxes) included.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn one(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A field left empty is `None`.
    fn given(&self, name: &str) -> Option<String> {
        Some(self.one(name).trim().to_owned()).filter(|v| !v.is_empty())
    }
}

#[derive(Deserialize)]
struct DeactivateForm {
    #[serde(default)]
    csrf: String,
    role: String,
    login: String,
}

/// Checkboxes for the canteens a form may name.
fn canteen_boxes(name: &str, canteens: &[String]) -> Markup {
    html! {
        fieldset.canteens {
            @for c in canteens {
                label { input type="checkbox" name=(name) value=(c); " " (c) }
            }
        }
    }
}

/// The canteens `caller` may change, for the forms.
async fn changeable_canteens(
    cloud: &Cloud,
    caller: &ConsoleCaller,
) -> Result<Vec<String>, AdminError> {
    Ok(super::admin::visible_nodes(cloud, &caller.account)
        .await?
        .into_iter()
        .map(|n| n.node_id)
        .filter(|n| caller.account.may_change(Some(n)))
        .collect())
}

/// The accounts page, with the outcome of the form just sent (if any).
fn accounts_page(
    lang: Lang,
    caller: &ConsoleCaller,
    canteens: &[String],
    outcome: Option<Result<super::accounts::Issued, AdminError>>,
) -> Response {
    let status = match &outcome {
        Some(Err(e)) => e.status,
        _ => StatusCode::OK,
    };
    let zh = lang.zh;
    page(
        status,
        lang,
        "Accounts",
        Some((&caller.account, &caller.csrf)),
        html! {
            @match &outcome {
                Some(Ok(issued)) => p.ok role="status" {
                    @if zh { "已保存 " (issued.accounts) " 个账户；各食堂终端在下次同步时收到。" }
                    @else { "Saved " (issued.accounts) " account(s); every canteen's box receives them on its next sync." }
                },
                Some(Err(e)) => p.error role="alert" { (e.message) },
                None => {},
            }
            @if !canteens.is_empty() {
                h2 { (tr(lang, "Staff account of chosen canteens")) }
                form method="post" action="/accounts/staff" {
                    input type="hidden" name="csrf" value=(caller.csrf);
                    label { (tr(lang, "User name")) " " input name="username" required; }
                    label { (tr(lang, "Name")) " " input name="name" required; }
                    label { (tr(lang, "Role")) " "
                        select name="role" { option value="staff" { "staff" } option value="manager" { "manager" } }
                    }
                    label { (tr(lang, "Password")) " " input type="password" name="password" autocomplete="new-password" required; }
                    p { (tr(lang, "Works at (a login of one canteen does not work at another):")) }
                    (canteen_boxes("canteen", canteens))
                    button type="submit" { (tr(lang, "Save")) }
                }
            }
            @if !caller.account.may_change(None) {
                p { (tr(lang, "Only campus admins import rosters and deactivate accounts.")) }
            } @else {
                h2 { (tr(lang, "Import a student roster")) }
                form method="post" action="/accounts/roster" {
                    input type="hidden" name="csrf" value=(caller.csrf);
                    label { (tr(lang, "CSV with the header student_number,name,pin (checked whole before anything is stored)")) }
                    textarea name="csv" rows="8" cols="60" required {}
                    button type="submit" { (tr(lang, "Import")) }
                }
                h2 { (tr(lang, "Deactivate an account")) }
                form method="post" action="/accounts/deactivate" {
                    input type="hidden" name="csrf" value=(caller.csrf);
                    label { (tr(lang, "Role")) " "
                        select name="role" { option value="student" { "student" } option value="staff" { "staff" } }
                    }
                    label { (tr(lang, "Student number or user name")) " " input name="login" required; }
                    button type="submit" { (tr(lang, "Deactivate")) }
                }
            }
        },
    )
}

async fn accounts_get(
    State(cloud): State<Cloud>,
    lang: Lang,
    caller: ConsoleCaller,
) -> Result<Response, AdminError> {
    let canteens = changeable_canteens(&cloud, &caller).await?;
    Ok(accounts_page(lang, &caller, &canteens, None))
}

async fn accounts_roster(
    State(cloud): State<Cloud>,
    lang: Lang,
    caller: ConsoleCaller,
    Form(form): Form<RosterForm>,
) -> Result<Response, AdminError> {
    caller.check_csrf(&form.csrf)?;
    let outcome = super::accounts::import_roster(&cloud, &caller.account, &form.csv).await;
    let canteens = changeable_canteens(&cloud, &caller).await?;
    Ok(accounts_page(lang, &caller, &canteens, Some(outcome)))
}

async fn accounts_staff(
    State(cloud): State<Cloud>,
    lang: Lang,
    caller: ConsoleCaller,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, AdminError> {
    let form = Fields(form);
    caller.check_csrf(&form.one("csrf"))?;
    let staff = super::accounts::StaffAccount {
        username: form.one("username"),
        name: form.one("name"),
        role: form.one("role"),
        password: form.one("password"),
        canteens: form.all("canteen"),
    };
    let outcome = super::accounts::staff_account(&cloud, &caller.account, staff).await;
    let canteens = changeable_canteens(&cloud, &caller).await?;
    Ok(accounts_page(lang, &caller, &canteens, Some(outcome)))
}

async fn accounts_deactivate(
    State(cloud): State<Cloud>,
    lang: Lang,
    caller: ConsoleCaller,
    Form(form): Form<DeactivateForm>,
) -> Result<Response, AdminError> {
    caller.check_csrf(&form.csrf)?;
    let d = super::accounts::Deactivation {
        role: form.role,
        login: form.login,
    };
    let outcome = super::accounts::deactivate(&cloud, &caller.account, d).await;
    let canteens = changeable_canteens(&cloud, &caller).await?;
    Ok(accounts_page(lang, &caller, &canteens, Some(outcome)))
}

//! The students' page in a real headless Chromium (driven through chromedriver) against
//! a real box: ordering with options, the live ready screen with the server's QR code,
//! a dish selling out while it sits in the cart, the hours shown when the box refuses
//! an order as closed, and the language switch. Screenshots at phone size go to
//! `artifacts/` at the repository root.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test installs them).

use anyhow::ensure;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tests::browser::{Browser, artifacts};
use tests::{Api, EdgeProcess, seed_demo};

/// A phone held upright.
const PHONE: (u32, u32) = (390, 844);
/// The narrowest phone the page supports.
const SMALL_PHONE: (u32, u32) = (320, 640);
/// A laptop.
const DESKTOP: (u32, u32) = (1280, 800);

/// The browser, with what a student does on the page.
struct Phone(Browser);

impl std::ops::Deref for Phone {
    type Target = Browser;
    fn deref(&self) -> &Browser {
        &self.0
    }
}

impl Phone {
    async fn open(base: &str, size: (u32, u32)) -> anyhow::Result<Self> {
        Ok(Self(Browser::open(base, size).await?))
    }

    async fn close(self) {
        self.0.close().await;
    }

    async fn log_in(&self, student: &str) -> anyhow::Result<()> {
        self.wait(
            "the login form",
            "return !document.getElementById('view-login').hidden",
        )
        .await?;
        self.type_into("#login-number", student).await?;
        self.type_into("#login-pin", "135790").await?;
        self.click("#login-submit").await?;
        self.wait(
            "the menu",
            "return !document.getElementById('view-menu').hidden && document.querySelectorAll('[data-testid=menu-item]').length > 0",
        )
        .await?;
        Ok(())
    }

    /// Adds a dish: its options dialog, the choices named `group-choice`, quantity.
    async fn add(&self, item_id: &str, choices: &[&str], quantity: u32) -> anyhow::Result<()> {
        self.add_and_show(item_id, choices, quantity, None).await
    }

    /// `add`, with a screenshot of the options dialog before confirming.
    async fn add_and_show(
        &self,
        item_id: &str,
        choices: &[&str],
        quantity: u32,
        screenshot: Option<&str>,
    ) -> anyhow::Result<()> {
        self.click(&format!("#item-{item_id} [data-testid=add]"))
            .await?;
        if choices.is_empty() && quantity == 1 {
            return Ok(());
        }
        self.wait(
            "the options dialog",
            "return document.getElementById('opt-dialog').open",
        )
        .await?;
        for c in choices {
            self.click(&format!("#opt-{c}")).await?;
        }
        for _ in 1..quantity {
            self.click("#opt-plus").await?;
        }
        if let Some(name) = screenshot {
            let path = artifacts()?.join(name);
            std::fs::write(path, self.client.screenshot().await?)?;
        }
        self.click("#opt-add").await?;
        self.wait(
            "the dialog to close",
            "return !document.getElementById('opt-dialog').open",
        )
        .await?;
        Ok(())
    }
}

/// A demo box serving on a loopback port.
struct Canteen {
    edge: EdgeProcess,
    api: Api,
    menu: Vec<Value>,
    _dir: tempfile::TempDir,
}

impl Canteen {
    async fn start(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("box");
        seed_demo(&data)?;
        let edge = EdgeProcess::serve(&data, env)?;
        let api = Api::new(&edge.base);
        let (status, menu) = api.get("/api/menu", None).await?;
        ensure!(status == 200, "menu: {status}");
        Ok(Self {
            menu: menu["items"].as_array().cloned().unwrap_or_default(),
            edge,
            api,
            _dir: dir,
        })
    }

    fn item(&self, name_en: &str) -> String {
        self.menu
            .iter()
            .find(|i| i["name_en"] == name_en)
            .and_then(|i| i["id"].as_str())
            .unwrap_or_else(|| panic!("{name_en} is on the demo menu"))
            .to_owned()
    }

    async fn orders_of(&self, student: u32) -> anyhow::Result<Vec<Value>> {
        let token = self.api.student(student).await?;
        let (status, orders) = self.api.get("/api/student/orders", Some(&token)).await?;
        ensure!(status == 200, "orders: {status} {orders}");
        Ok(orders.as_array().cloned().unwrap_or_default())
    }

    async fn transition(&self, staff: &str, order: &Value, event: &str) -> anyhow::Result<Value> {
        self.api.transition(staff, order, event).await
    }
}

/// Runs a scenario with a fresh box and browser; the browser is closed however it ends.
async fn with_phone<F, Fut>(env: &[(&str, &str)], screen: (u32, u32), scenario: F)
where
    F: FnOnce(Canteen, Phone) -> Fut,
    Fut: Future<Output = (Phone, anyhow::Result<()>)>,
{
    let canteen = Canteen::start(env).await.expect("a demo box");
    let phone = Phone::open(&canteen.edge.base.clone(), screen)
        .await
        .expect("a headless Chromium");
    let (phone, result) = scenario(canteen, phone).await;
    phone.close().await;
    result.unwrap();
}

#[tokio::test]
async fn a_student_orders_with_options_and_sees_it_ready_live() {
    with_phone(&[], PHONE, |canteen, phone| async move {
        let result = order_to_ready(&canteen, &phone).await;
        (phone, result)
    })
    .await;
}

async fn order_to_ready(canteen: &Canteen, phone: &Phone) -> anyhow::Result<()> {
    let noodles = canteen.item("Lanzhou beef noodle soup");
    let dumplings = canteen.item("Pork and cabbage dumplings");
    // Three paid noodle orders are waiting in the kitchen before ours.
    let staff = canteen.api.staff("staff", "staff-pass").await?;
    let mut ahead = Vec::new();
    for student in 2..=4 {
        let token = canteen.api.student(student).await?;
        let (status, placed) = canteen
            .api
            .post(
                "/api/student/orders",
                Some(&token),
                &json!({"lines": [{"item_id": noodles, "quantity": 1,
                    "options": [{"group": "size", "choice": "regular"}, {"group": "spice", "choice": "mild"}]}],
                    "payment_mode": "counter"}),
            )
            .await?;
        ensure!(status == 201, "order ahead: {status} {placed}");
        ahead.push(canteen.transition(&staff, &placed, "pay").await?);
    }
    phone.goto("/").await?;
    phone.log_in("2024001").await?;

    // Large (+¥3) and hot, twice; 18 dumplings (+¥5) with vinegar and chili oil.
    phone
        .add_and_show(
            &noodles,
            &["size-large", "spice-hot"],
            2,
            Some("student-options.png"),
        )
        .await?;
    phone
        .add(&dumplings, &["count-18", "dip-vinegar", "dip-chili"], 1)
        .await?;
    let expected_fen = (1800 + 300) * 2 + (1400 + 500);
    let summary = phone.text("#cart-summary").await?;
    ensure!(summary.contains("¥61.00"), "cart tab says {summary:?}");
    phone.screenshot("student-menu.png").await?;

    phone.click("#tab-cart").await?;
    phone
        .wait(
            "two cart lines",
            "return document.querySelectorAll('[data-testid=cart-line]').length === 2",
        )
        .await?;
    ensure!(phone.text("#cart-total").await? == "¥61.00");
    phone.screenshot("student-cart.png").await?;
    phone.click("#place").await?;
    phone
        .wait(
            "the placed order",
            "return !document.getElementById('view-order').hidden && document.getElementById('order-state').dataset.state === 'placed'",
        )
        .await?;

    let orders = canteen.orders_of(1).await?;
    ensure!(orders.len() == 1, "one order, not {}", orders.len());
    let order = &orders[0];
    ensure!(order["total_fen"] == expected_fen, "{order}");
    let number = order["pickup_number"].to_string();
    ensure!(phone.text("#pickup-number").await? == number);
    ensure!(phone.text("#order-total").await? == "¥61.00");
    let pay = phone.text("#pay-box").await?;
    ensure!(pay.contains("counter") && pay.contains(&number), "{pay}");

    // The kitchen's promise, behind the three orders ahead: shown in the canteen's
    // time zone as the box sent it.
    let estimate = order["ready_estimate"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let promised = order["ready_promised_at"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(!estimate.is_empty() && !promised.is_empty(), "{order}");
    let shown = phone
        .wait(
            "the ready estimate",
            "var e = document.getElementById('ready-estimate'); return !e.hidden && e.textContent",
        )
        .await?;
    let shown = shown.as_str().unwrap_or_default().to_owned();
    // An unpaid order's estimate ("if paid now") moves with the clock, and its student
    // is told once it has moved by a minute: the page may show any minute from a little
    // before the estimate read above to the one the box gives now.
    let later = canteen.orders_of(1).await?;
    let latest = later
        .first()
        .and_then(|o| o["ready_estimate"].as_str())
        .unwrap_or_default()
        .to_owned();
    let minutes = phone
        .js(&format!(
            "var from = Math.floor((new Date({}).getTime() - 120000) / 60000) * 60000, \
             to = new Date({}).getTime(), out = []; for (var t = from; t <= to; t += 60000) out.push(new Date(t).toLocaleTimeString('en-GB', \
             {{hour: '2-digit', minute: '2-digit', hour12: false, timeZone: 'Asia/Shanghai'}})); return out",
            json!(estimate),
            json!(latest)
        ))
        .await?;
    let minutes: Vec<&str> = minutes
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ensure!(
        shown.starts_with("Ready around")
            && !minutes.is_empty()
            && minutes.iter().any(|m| shown.contains(m)),
        "the page shows {shown:?} for {estimate}..{latest} ({minutes:?})"
    );
    phone.screenshot("student-estimate.png").await?;
    // The orders ahead are cancelled: the estimate moves more than a minute earlier
    // and the page follows over its event stream, without a reload.
    for order in &ahead {
        canteen.transition(&staff, order, "cancel").await?;
    }
    phone
        .wait(
            "the estimate to move",
            &format!(
                "var e = document.getElementById('ready-estimate'); return !e.hidden && e.textContent !== {}",
                json!(shown)
            ),
        )
        .await?;
    let moved = phone.text("#ready-estimate").await?;
    ensure!(moved.starts_with("Ready around"), "{moved}");

    // Staff work the order through the API; the page follows without a reload.
    let paid = canteen.transition(&staff, order, "pay").await?;
    phone
        .wait(
            "the paid state",
            "return document.getElementById('order-state').dataset.state === 'paid'",
        )
        .await?;
    let preparing = canteen.transition(&staff, &paid, "start_preparing").await?;
    phone
        .wait(
            "the preparing state",
            "return document.getElementById('order-state').dataset.state === 'preparing'",
        )
        .await?;
    let marked = Instant::now();
    canteen.transition(&staff, &preparing, "mark_ready").await?;
    phone
        .wait_at_most(
            "the ready screen with the server's QR code",
            &format!(
                "return document.getElementById('order-state').dataset.state === 'ready' \
                 && !document.getElementById('ready-box').hidden \
                 && document.getElementById('pickup-number').textContent === {} \
                 && document.querySelector('#qr svg path') !== null",
                json!(number)
            ),
            Duration::from_secs(2),
        )
        .await?;
    let took = marked.elapsed();
    ensure!(took < Duration::from_secs(2), "ready screen after {took:?}");
    ensure!(
        phone
            .js("return document.getElementById('ready-estimate').hidden")
            .await?
            == json!(true),
        "a ready order has no estimate"
    );
    // The same drawing the box serves to the order's owner.
    let token = canteen.api.student(1).await?;
    let served = canteen
        .api
        .http
        .get(format!(
            "{}/api/student/orders/{}/qr.svg",
            canteen.api.base,
            order["id"].as_str().unwrap_or_default()
        ))
        .bearer_auth(token)
        .send()
        .await?
        .text()
        .await?;
    let shown = phone
        .js("var s = document.querySelector('#qr svg'); return [s.getAttribute('viewBox'), s.querySelector('path').getAttribute('d')]")
        .await?;
    ensure!(
        served.contains(&format!("viewBox=\"{}\"", shown[0].as_str().unwrap_or("?")))
            && served.contains(&format!("d=\"{}\"", shown[1].as_str().unwrap_or("?"))),
        "the page shows the box's QR code: {shown}"
    );
    phone.screenshot("student-ready.png").await?;

    phone.click("#tab-orders").await?;
    phone
        .wait(
            "today's orders",
            "return document.querySelectorAll('[data-testid=order-row]').length === 1",
        )
        .await?;
    ensure!(phone.text("[data-testid=order-row] .num").await? == format!("#{number}"));
    Ok(())
}

#[tokio::test]
async fn a_dish_sold_out_while_in_the_cart_is_explained_and_not_ordered() {
    with_phone(&[], PHONE, |canteen, phone| async move {
        let result = sold_out_in_cart(&canteen, &phone).await;
        (phone, result)
    })
    .await;
}

async fn sold_out_in_cart(canteen: &Canteen, phone: &Phone) -> anyhow::Result<()> {
    let tomato = canteen.item("Tomato and egg with rice");
    let soy = canteen.item("Soy milk");
    // Five sour plum drinks left (of 100): students see "few left", never the count.
    let plum = canteen.item("Sour plum drink");
    let staff = canteen.api.staff("staff", "staff-pass").await?;
    let (status, body) = canteen
        .api
        .post(
            &format!("/api/staff/stock/{plum}"),
            Some(&staff),
            &json!({"action": "adjust", "delta": -95, "reason": "spilled"}),
        )
        .await?;
    ensure!(status == 200, "adjust: {status} {body}");
    phone.goto("/").await?;
    let few = phone
        .wait(
            "the few-left badge",
            &format!(
                "var b = document.querySelector('#item-{plum} [data-testid=few-left]'); return b ? b.textContent : null"
            ),
        )
        .await?;
    let few = few.as_str().unwrap_or_default();
    ensure!(
        (few.contains("few") || few.contains("少量")) && !few.contains(char::is_numeric),
        "few-left badge says {few:?}"
    );
    phone.log_in("2024003").await?;
    phone.add(&tomato, &[], 1).await?;
    phone.add(&soy, &["temp-cold"], 1).await?;
    phone.click("#tab-cart").await?;
    phone
        .wait(
            "two cart lines",
            "return document.querySelectorAll('[data-testid=cart-line]').length === 2",
        )
        .await?;

    let (status, body) = canteen
        .api
        .post(
            &format!("/api/staff/stock/{tomato}"),
            Some(&staff),
            &json!({"action": "sold_out"}),
        )
        .await?;
    ensure!(status == 200, "sold out: {status} {body}");

    phone.click("#place").await?;
    let alert = phone
        .wait(
            "the sold-out explanation",
            "var t = document.getElementById('alert').textContent; return t.indexOf('sold out') >= 0 ? t : null",
        )
        .await?;
    let alert = alert.as_str().unwrap_or_default();
    ensure!(
        alert.contains("Tomato and egg with rice") && alert.contains("Remove it"),
        "{alert}"
    );
    phone
        .wait(
            "the sold-out line marked",
            &format!(
                "return document.querySelector('[data-testid=cart-line].problem[data-item=\"{tomato}\"]') !== null"
            ),
        )
        .await?;
    ensure!(
        canteen.orders_of(3).await?.is_empty(),
        "no order was placed"
    );
    // The refreshed menu shows the dish as sold out.
    let badge = phone
        .js(&format!(
            "return document.querySelector('#item-{tomato} [data-testid=sold-out]') !== null"
        ))
        .await?;
    ensure!(badge == json!(true), "sold-out badge on the menu");
    phone.screenshot("student-sold-out.png").await?;

    // Following the advice: remove it and place again; only the soy milk is ordered.
    phone
        .click(&format!(
            "[data-testid=cart-line][data-item=\"{tomato}\"] .ghost"
        ))
        .await?;
    // A double tap places one order.
    phone
        .js("var b = document.getElementById('place'); b.click(); b.click(); return true")
        .await?;
    phone
        .wait(
            "the placed order",
            "return !document.getElementById('view-order').hidden && document.getElementById('order-state').dataset.state === 'placed'",
        )
        .await?;
    let orders = canteen.orders_of(3).await?;
    ensure!(orders.len() == 1, "{orders:?}");
    ensure!(orders[0]["lines"].as_array().map(Vec::len) == Some(1));
    ensure!(orders[0]["lines"][0]["item_id"] == json!(soy));
    Ok(())
}

#[tokio::test]
async fn the_language_switch_changes_the_texts_and_is_remembered() {
    // On the narrowest phone: nothing may need sideways scrolling.
    with_phone(&[], SMALL_PHONE, |canteen, phone| async move {
        let result = language_switch(&canteen, &phone).await;
        (phone, result)
    })
    .await;
}

async fn language_switch(canteen: &Canteen, phone: &Phone) -> anyhow::Result<()> {
    let noodles = canteen.item("Lanzhou beef noodle soup");
    phone.goto("/").await?;
    // A token the box no longer accepts: back to the login, saying why.
    phone
        .js("localStorage.setItem('canteen.session', JSON.stringify({token: 'expired', expires_at: '2999-01-01T00:00:00Z', name: 'x'})); return true")
        .await?;
    phone.client.refresh().await?;
    phone
        .wait(
            "the login after a refused token",
            "return !document.getElementById('view-login').hidden && document.getElementById('alert').textContent.indexOf('log in again') >= 0 && localStorage.getItem('canteen.session') === null",
        )
        .await?;
    phone
        .wait(
            "the English login",
            "return document.documentElement.lang === 'en' && document.getElementById('login-title').textContent === 'Log in'",
        )
        .await?;
    phone.click("#lang-toggle").await?;
    phone
        .wait(
            "the Chinese login",
            "return document.documentElement.lang === 'zh-CN' && document.getElementById('login-title').textContent === '登录'",
        )
        .await?;
    ensure!(phone.text("label[for=login-number]").await? == "学号");
    phone.log_in("2024004").await?;
    ensure!(phone.text("#menu-title").await? == "今日菜单");
    ensure!(phone.text(&format!("#item-{noodles} .name")).await? == "兰州牛肉面");
    ensure!(phone.text("#tab-orders").await? == "订单");
    phone.screenshot("student-menu-zh-320.png").await?;
    phone.fits_width("the Chinese menu").await?;
    phone
        .add(&noodles, &["size-large", "spice-medium"], 1)
        .await?;
    phone.click("#tab-cart").await?;
    phone.fits_width("the Chinese cart").await?;

    // Remembered across a reload (and the session too).
    phone.client.refresh().await?;
    phone
        .wait(
            "the Chinese menu after a reload",
            "return document.documentElement.lang === 'zh-CN' && document.getElementById('menu-title').textContent === '今日菜单' && !document.getElementById('view-menu').hidden",
        )
        .await?;
    phone.click("#lang-toggle").await?;
    phone
        .wait(
            "the English menu",
            "return document.documentElement.lang === 'en' && document.getElementById('menu-title').textContent === \"Today's menu\"",
        )
        .await?;
    ensure!(phone.text(&format!("#item-{noodles} .name")).await? == "Lanzhou beef noodle soup");
    ensure!(phone.text("#tab-orders").await? == "Orders");
    Ok(())
}

/// Stands in for a flaky network: wraps the page's `fetch`.
/// `window.__mode` makes the next order POST answer 429 (`'429'`) or reach the box and
/// then lose the response (`'lose'`); every POST is recorded in `window.__sent`.
const FETCH_WRAPPER: &str = r#"
var real = window.fetch.bind(window);
window.__sent = []; window.__mode = 'pass';
window.fetch = function (url, init) {
  init = init || {};
  var method = (init.method || 'GET').toUpperCase();
  if (method === 'POST' && String(url) === '/api/student/orders') {
    var body = JSON.parse(init.body);
    window.__sent.push({key: init.headers['Idempotency-Key'], body: JSON.parse(init.body)});
    if (window.__mode === '429') {
      window.__mode = 'pass';
      return Promise.resolve(new Response(JSON.stringify({error: {code: 'rate_limited', message: 'too many attempts; try again in 2 s'}}),
        {status: 429, headers: {'Retry-After': '2', 'Content-Type': 'application/json'}}));
    }
    var forward = Object.assign({}, init, {body: JSON.stringify(body)});
    if (window.__mode === 'lose') {
      window.__mode = 'pass';
      return real(url, forward).then(function () { throw new TypeError('Failed to fetch'); });
    }
    return real(url, forward);
  }
  return real(url, init);
};
window.dispatchEvent(new Event('online'));
return true;
"#;

#[tokio::test]
async fn slots_campus_card_rate_limits_lost_responses_and_an_unreachable_box() {
    let env = [
        ("EDGE_PAYMENT_MODES", "counter,campus_card"),
        ("EDGE_CAMPUS_CARD_SECRET", "e2e-campus-card-secret"),
    ];
    with_phone(&env, PHONE, |canteen, phone| async move {
        let result = extras_and_failures(canteen, &phone).await;
        (phone, result)
    })
    .await;
}

async fn extras_and_failures(canteen: Canteen, phone: &Phone) -> anyhow::Result<()> {
    let soy = canteen.item("Soy milk");
    let plum = canteen.item("Sour plum drink");
    // The canteen's settings, through the box's real settings API: an announcement,
    // a time zone where it is now between 12:00 and 13:00 (so the slots below are the
    // same whenever the test runs), a slot that is over, and three ahead, the first
    // already full.
    let manager = canteen.api.manager().await?;
    let utc_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        / 3600
        % 24;
    let offset = 12 - i64::try_from(utc_hour)?;
    // IANA's Etc zones count the other way: Etc/GMT-8 is eight hours ahead of UTC.
    let zone = match offset {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    let (status, body) = canteen
        .api
        .post(
            "/api/staff/settings/edits",
            Some(&manager),
            &json!([
                {"op": "set_announcement", "text": "Noodle bar closes at 13:00 today"},
                {"op": "set_time_zone", "time_zone": zone},
                {"op": "add_slot", "slot": {"id": "s0", "start": "11:00", "end": "11:30", "capacity": 20}},
                {"op": "add_slot", "slot": {"id": "s1", "start": "13:10", "end": "13:25", "capacity": 1}},
                {"op": "add_slot", "slot": {"id": "s2", "start": "13:25", "end": "13:40", "capacity": 8}},
                {"op": "add_slot", "slot": {"id": "s3", "start": "13:40", "end": "13:55", "capacity": 20}}
            ]),
        )
        .await?;
    ensure!(status == 200, "settings: {status} {body}");
    let other = canteen.api.student(6).await?;
    let (status, body) = canteen
        .api
        .post(
            "/api/student/orders",
            Some(&other),
            &json!({"lines": [{"item_id": plum, "quantity": 1}], "payment_mode": "counter", "pickup_slot": "s1"}),
        )
        .await?;
    ensure!(status == 201, "filling s1: {status} {body}");
    phone.goto("/").await?;
    phone.log_in("2024005").await?;
    phone.js(FETCH_WRAPPER).await?;
    let shown = phone
        .wait(
            "the announcement",
            "var a = document.getElementById('announcement'); return !a.hidden && a.textContent",
        )
        .await?;
    ensure!(
        shown == json!("Noodle bar closes at 13:00 today"),
        "{shown}"
    );

    phone.add(&soy, &["temp-hot"], 1).await?;
    phone.click("#tab-cart").await?;
    phone
        .wait(
            "the pickup slots",
            "return !document.getElementById('slot-field').hidden && document.querySelectorAll('#slot-list input').length === 4",
        )
        .await?;
    let slots = phone
        .js("return ['s1','s2','s3','s0'].map(function (id) { var i = document.getElementById('slot-' + id); \
             return [i.disabled, i.checked, i.closest('label').textContent]; })")
        .await?;
    // The slot that is over cannot be met by the kitchen: not offered.
    ensure!(
        slots[3][0] == json!(true)
            && slots[3][2]
                .as_str()
                .unwrap_or("")
                .contains("the kitchen cannot make it"),
        "{slots}"
    );
    let next = phone.text("#slot-next").await?;
    ensure!(
        next.contains("13:25"),
        "the next slot the kitchen can meet: {next:?}"
    );
    ensure!(
        slots[0][0] == json!(true) && slots[0][2].as_str().unwrap_or("").contains("full"),
        "{slots}"
    );
    let second = slots[1][2].as_str().unwrap_or("");
    ensure!(
        slots[1][0] == json!(false) && slots[1][1] == json!(true),
        "{slots}"
    );
    ensure!(
        second.contains("13:25–13:40") && second.contains("8 left"),
        "{slots}"
    );
    ensure!(
        slots[2][0] == json!(false) && slots[2][1] == json!(false),
        "{slots}"
    );
    phone.click("#pay-campus_card").await?;
    phone.screenshot("student-slots.png").await?;

    // Rate limited: the page says when to try again and holds the button until then.
    phone.js("window.__mode = '429'; return true").await?;
    phone.click("#place").await?;
    phone
        .wait(
            "the rate-limit message",
            "return /Try again in [12] s/.test(document.getElementById('alert').textContent) && document.getElementById('place').disabled",
        )
        .await?;
    phone
        .wait(
            "the button back after Retry-After",
            "return !document.getElementById('place').disabled",
        )
        .await?;

    // The order reaches the box but the answer is lost: the page retries with the same
    // Idempotency-Key and the box answers with the same order.
    phone.js("window.__mode = 'lose'; return true").await?;
    phone.click("#place").await?;
    phone
        .wait(
            "the placed order after a retry",
            "return !document.getElementById('view-order').hidden && document.getElementById('order-state').dataset.state === 'placed'",
        )
        .await?;
    let sent = phone.js("return window.__sent").await?;
    let sent = sent.as_array().cloned().unwrap_or_default();
    ensure!(sent.len() == 3, "429, lost, retried: {sent:?}");
    let key = sent[0]["key"].as_str().unwrap_or_default();
    ensure!(key.len() >= 16, "{key:?}");
    for s in &sent {
        ensure!(s["key"] == json!(key), "one key per checkout: {sent:?}");
        ensure!(s["body"]["pickup_slot"] == json!("s2"), "{s}");
        ensure!(s["body"]["payment_mode"] == json!("campus_card"), "{s}");
    }
    let orders = canteen.orders_of(5).await?;
    ensure!(orders.len() == 1, "exactly one order: {orders:?}");
    let mode = phone
        .js("var p = document.getElementById('pay-box'); return !p.hidden && p.dataset.mode")
        .await?;
    ensure!(mode == json!("campus_card"), "{mode}");
    ensure!(phone.text("#pay-box").await?.contains("confirms by itself"));
    ensure!(
        phone.text("#alert").await?.is_empty(),
        "no stale retry message"
    );
    phone.screenshot("student-campus-card.png").await?;

    // Cancelled while the kitchen has not started.
    phone.click("#cancel").await?;
    phone.click("#cancel-yes").await?;
    phone
        .wait(
            "the cancelled order",
            "return document.getElementById('order-state').dataset.state === 'cancelled' && document.getElementById('cancel-box').hidden",
        )
        .await?;
    let orders = canteen.orders_of(5).await?;
    ensure!(orders[0]["state"] == json!("cancelled"), "{orders:?}");

    // The box goes away: the page says so and keeps retrying; placing says it will retry.
    canteen.edge.kill_9();
    phone
        .js("window.dispatchEvent(new Event('online')); return true")
        .await?;
    phone
        .wait(
            "the unreachable banner",
            "var n = document.getElementById('net'); return !n.hidden && n.textContent.indexOf(\"Can't reach the canteen box\") >= 0",
        )
        .await?;
    phone.click("#tab-menu").await?;
    phone.add(&plum, &[], 1).await?;
    phone.click("#tab-cart").await?;
    phone.click("#place").await?;
    phone
        .wait(
            "the retrying message",
            "return document.getElementById('alert').textContent.indexOf('retrying the same order') >= 0",
        )
        .await?;
    phone.screenshot("student-offline.png").await?;
    Ok(())
}

#[tokio::test]
async fn an_order_refused_as_closed_shows_the_hours_the_box_sends() {
    with_phone(&[], PHONE, |canteen, phone| async move {
        let result = closed_hours(&canteen, &phone).await;
        (phone, result)
    })
    .await;
}

/// The canteen closes while a dish sits in the cart (the page still shows it open): the
/// box refuses the order as `closed`, and the page shows today's hours from the error's
/// `details`, then the menu as closed.
async fn closed_hours(canteen: &Canteen, phone: &Phone) -> anyhow::Result<()> {
    let plum = canteen.item("Sour plum drink");
    phone.goto("/").await?;
    phone.log_in("2024007").await?;
    phone.add(&plum, &[], 1).await?;
    phone.click("#tab-cart").await?;
    phone
        .wait(
            "the place button",
            "return !document.getElementById('place').disabled",
        )
        .await?;

    // Hours that leave out the present moment, every day of the week, through the box's
    // real settings API. The demo canteen keeps Shanghai time (UTC+8, no summer time).
    let (status, menu) = canteen.api.get("/api/menu", None).await?;
    ensure!(status == 200, "menu: {status}");
    ensure!(menu["time_zone"] == json!("Asia/Shanghai"), "{menu}");
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let local_minute = (unix / 60 + 8 * 60) % (24 * 60);
    let (open, close) = if local_minute < 12 * 60 {
        ("20:00", "21:00")
    } else {
        ("06:00", "07:00")
    };
    let edits: Vec<Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|day| json!({"op": "set_hours", "day": day, "open": open, "close": close, "closed": false}))
        .collect();
    let manager = canteen.api.manager().await?;
    let (status, body) = canteen
        .api
        .post("/api/staff/settings/edits", Some(&manager), &json!(edits))
        .await?;
    ensure!(status == 200, "settings: {status} {body}");

    phone.click("#place").await?;
    let said = phone
        .wait(
            "the closed message with the hours",
            "var a = document.getElementById('alert').textContent; \
             return a.indexOf('not taking orders') >= 0 && a.indexOf(' to ') >= 0 && a",
        )
        .await?;
    let said = said.as_str().unwrap_or_default();
    ensure!(
        said.contains(&format!("orders from {open} to {close}")),
        "{said:?}"
    );
    // The menu is read again: the canteen shows as closed and nothing can be placed.
    phone
        .wait(
            "the menu shown as closed",
            "return document.getElementById('open-state').textContent === 'Closed' \
             && !document.getElementById('closed-note').hidden \
             && document.getElementById('place').disabled",
        )
        .await?;
    ensure!(
        canteen.orders_of(7).await?.is_empty(),
        "no order while closed"
    );
    phone.screenshot("student-closed.png").await?;
    Ok(())
}

#[tokio::test]
async fn the_page_also_works_on_a_desktop_screen() {
    with_phone(&[], DESKTOP, |canteen, phone| async move {
        let result = desktop(&canteen, &phone).await;
        (phone, result)
    })
    .await;
}

async fn desktop(canteen: &Canteen, phone: &Phone) -> anyhow::Result<()> {
    let dumplings = canteen.item("Pork and cabbage dumplings");
    phone.goto("/").await?;
    phone.log_in("2024006").await?;
    phone.fits_width("the menu").await?;
    phone
        .add(&dumplings, &["count-12", "dip-garlic"], 1)
        .await?;
    phone.click("#tab-cart").await?;
    phone.fits_width("the cart").await?;
    phone.click("#place").await?;
    phone
        .wait(
            "the placed order",
            "return document.getElementById('order-state').dataset.state === 'placed'",
        )
        .await?;
    phone.screenshot("student-desktop.png").await?;
    Ok(())
}

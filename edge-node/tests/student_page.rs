//! The students' page as the router serves it: the pickup QR code (owner only), cache
//! headers that let phones keep the assets, and compression.

mod common;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use common::TestBox;
use edge_node::http::page::asset_version;
use http_body_util::BodyExt;
use std::io::Read;
use tower::ServiceExt;

async fn send(b: &TestBox, uri: &str, headers: &[(&str, &str)]) -> Response<Body> {
    let mut req = Request::builder().uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    b.router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn bytes(res: Response<Body>) -> Vec<u8> {
    res.into_body().collect().await.unwrap().to_bytes().to_vec()
}

fn header_of(res: &Response<Body>, name: header::HeaderName) -> &str {
    res.headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or(""))
}

/// Draws the SVG's dark modules (`M{x} {y}h{w}v{h}H{x}V{y}` rectangles on a light
/// background, as the box writes them) into a bitmap, 8 pixels a module, and reads it
/// with `rqrr`, a QR decoder independent of the box's encoder.
fn decode_qr_svg(svg: &str) -> String {
    let number = |s: &str, key: &str| -> u32 {
        let at = s.find(key).unwrap() + key.len();
        s[at..].split('"').next().unwrap().parse().unwrap()
    };
    let (modules_w, modules_h) = (number(svg, "width=\""), number(svg, "height=\""));
    let scale = 8;
    let (w, h) = ((modules_w * scale) as usize, (modules_h * scale) as usize);
    let mut dark = vec![false; w * h];
    let d_at = svg.find(" d=\"").unwrap() + 4;
    let path = svg[d_at..].split('"').next().unwrap();
    for rect in path.split('M').filter(|r| !r.is_empty()) {
        // "x y" "h" w "v" h "H" x "V" y
        let nums: Vec<u32> = rect
            .split(|c: char| c == ' ' || c.is_ascii_alphabetic())
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().unwrap())
            .collect();
        let (x, y, rw, rh) = (nums[0], nums[1], nums[2], nums[3]);
        for py in y * scale..(y + rh) * scale {
            for px in x * scale..(x + rw) * scale {
                dark[py as usize * w + px as usize] = true;
            }
        }
    }
    let mut image =
        rqrr::PreparedImage::prepare_from_greyscale(
            w,
            h,
            |x, y| {
                if dark[y * w + x] { 0 } else { 255 }
            },
        );
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

#[tokio::test]
async fn the_pickup_qr_code_is_served_to_the_orders_owner_only() {
    let b = TestBox::new().await;
    let (s1, s2) = (b.student(1).await, b.student(2).await);
    let order = b.place(&s1, b.noodle_order(1)).await;
    assert_eq!(order.status, StatusCode::CREATED, "{:?}", order.body);
    let id = order.body["id"].as_str().unwrap();
    let uri = format!("/api/student/orders/{id}/qr.svg");

    let mine = send(&b, &uri, &[("authorization", &format!("Bearer {s1}"))]).await;
    assert_eq!(mine.status(), StatusCode::OK);
    assert_eq!(header_of(&mine, header::CONTENT_TYPE), "image/svg+xml");
    assert_eq!(header_of(&mine, header::CACHE_CONTROL), "private, no-store");
    let svg = String::from_utf8(bytes(mine).await).unwrap();
    let token = order.body["pickup_token"].as_str().unwrap();
    assert_eq!(
        decode_qr_svg(&svg),
        token,
        "an independent decoder reads the order's pickup token"
    );
    assert!(svg.contains("<svg") && svg.ends_with("</svg>"));

    // Only event streams take the token in the query (it would land in logs).
    let by_query = send(&b, &format!("{uri}?access_token={s1}"), &[]).await;
    assert_eq!(by_query.status(), StatusCode::UNAUTHORIZED);

    let theirs = b.get(&uri, Some(&s2)).await;
    assert_eq!(theirs.status, StatusCode::FORBIDDEN);
    assert_eq!(theirs.code(), "forbidden");
    let staff = b.get(&uri, Some(&b.staff().await)).await;
    assert_eq!(staff.status, StatusCode::FORBIDDEN);
    assert_eq!(b.get(&uri, None).await.status, StatusCode::UNAUTHORIZED);
    let unknown = b
        .get(
            &format!("/api/student/orders/{}/qr.svg", uuid::Uuid::now_v7()),
            Some(&s1),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_page_revalidates_and_its_assets_are_cached_for_good() {
    let b = TestBox::new().await;
    let page = send(&b, "/", &[]).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        header_of(&page, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(header_of(&page, header::CACHE_CONTROL), "no-cache");
    let csp = header_of(&page, header::CONTENT_SECURITY_POLICY).to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let etag = header_of(&page, header::ETAG).to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let html = String::from_utf8(bytes(page).await).unwrap();
    let v = asset_version();
    let js_path = format!("/assets/{v}/app.js");
    let css_path = format!("/assets/{v}/app.css");
    assert!(html.contains(&js_path) && html.contains(&css_path));
    assert!(html.contains("id=\"login-form\""));

    let again = send(&b, "/", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header_of(&again, header::ETAG), etag);
    assert!(bytes(again).await.is_empty());
    let changed = send(&b, "/", &[("if-none-match", "W/\"something-else\"")]).await;
    assert_eq!(changed.status(), StatusCode::OK);

    let mut total = 0;
    for (path, content_type) in [
        (&js_path, "text/javascript; charset=utf-8"),
        (&css_path, "text/css; charset=utf-8"),
    ] {
        let res = send(&b, path, &[]).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(header_of(&res, header::CONTENT_TYPE), content_type);
        assert_eq!(
            header_of(&res, header::CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );
        total += bytes(res).await.len();
    }
    assert_eq!(total, edge_node::http::page::asset_bytes());
    assert!(total <= 100_000, "{total} bytes of JS and CSS");

    for wrong in [
        "/assets/0123456789ab/app.js".to_owned(),
        format!("/assets/{v}/other.js"),
    ] {
        let res = send(&b, &wrong, &[]).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{wrong}");
    }
    // The operations endpoints stay where they were.
    assert_eq!(b.get("/healthz", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn responses_are_gzipped_when_asked_but_event_streams_are_not() {
    let b = TestBox::new().await;
    let js_path = format!("/assets/{}/app.js", asset_version());
    let plain = bytes(send(&b, &js_path, &[]).await).await;

    let res = send(&b, &js_path, &[("accept-encoding", "gzip")]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header_of(&res, header::CONTENT_ENCODING), "gzip");
    assert!(
        header_of(&res, header::VARY)
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    assert_eq!(
        header_of(&res, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    let gz = bytes(res).await;
    assert!(gz.len() * 2 < plain.len(), "{} → {}", plain.len(), gz.len());
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);

    let page = send(&b, "/", &[("accept-encoding", "gzip")]).await;
    assert_eq!(header_of(&page, header::CONTENT_ENCODING), "gzip");
    let menu = send(&b, "/api/menu", &[("accept-encoding", "gzip")]).await;
    assert_eq!(header_of(&menu, header::CONTENT_ENCODING), "gzip");

    // Event streams must flush each event as it happens: never compressed.
    let s = b.student(1).await;
    let events = send(
        &b,
        &format!("/api/student/events?access_token={s}"),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(events.status(), StatusCode::OK);
    assert!(header_of(&events, header::CONTENT_TYPE).starts_with("text/event-stream"));
    assert_eq!(header_of(&events, header::CONTENT_ENCODING), "");
}

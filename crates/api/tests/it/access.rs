//! Who may call what: the route table walked through the built router.
//!
//! Every route of [`ROUTES`] is sent, by every method, without a
//! credential, with an unknown token, with a shop token and with an
//! operator token; each answer must be the one its access says, and a
//! refused request must never reach the service. A route the table does not
//! declare cannot be served (the router is built from the table only, which
//! the source check below holds), and a route added to the table fails the
//! test until its access is also written down here ([`DECIDED`]), which is
//! where a reviewer sees it.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use ordermq_api::router_for;
use ordermq_api::routes::{Access, Listener, ROUTES, Side};
use ordermq_api::session::CSRF_HEADER;
use serde_json::{Value, json};
use tower::ServiceExt;

use ordermq_domain::{Actor, RefundId};

use crate::fake::{Call, FakeService};
use crate::handlers::{OPERATOR, SHOP, app, state};

/// Every route's access as decided (and reviewed): the table must match.
const DECIDED: &[(&str, &str, Access)] = &[
    // Liveness for load balancers and orchestrators.
    ("GET", "/healthz", Access::Public),
    // Third parties' callbacks: their signature is their credential.
    ("POST", "/api/payments/notify", Access::Public),
    ("POST", "/api/logistics/notify", Access::Public),
    // The dashboard's sign-in: it is how an operator gets a session.
    ("GET", "/signin", Access::Public),
    ("POST", "/signin", Access::Public),
    // The shop's backend.
    ("GET", "/api/products", Access::Shop),
    ("POST", "/api/orders", Access::Shop),
    ("GET", "/api/orders/{id}", Access::Shop),
    ("GET", "/api/users/{id}", Access::Shop),
    ("GET", "/api/users/{id}/{kind}", Access::Shop),
    // Flash sales: the shop sends its shoppers' attempts and reads their states.
    ("POST", "/api/sales/{id}/attempts", Access::Shop),
    ("GET", "/api/attempts/{id}", Access::Shop),
    ("GET", "/api/attempts/{id}/events", Access::Shop),
    // Operators: money goes back, counters, the dashboard.
    ("GET", "/", Access::Operator),
    ("POST", "/signout", Access::Operator),
    ("POST", "/api/orders/{id}/refund", Access::Operator),
    ("POST", "/api/refunds/{id}/retry", Access::Operator),
    ("GET", "/api/stats", Access::Operator),
    // A sale takes units out of a product's stock: the business decides it.
    ("POST", "/api/sales", Access::Operator),
    // What a running sale has sold, queued and turned away.
    ("GET", "/api/sales", Access::Operator),
    ("GET", "/api/sales/{id}", Access::Operator),
];

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// A concrete path for a route's pattern.
fn concrete(pattern: &str) -> String {
    pattern.replace("{id}", "X1").replace("{kind}", "points")
}

/// A request with a JSON body, as the given caller.
fn request(method: &Method, path: &str, bearer: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::from("{}")).unwrap()
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value, header::HeaderMap) {
    let response = router.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    )
}

fn is_refusal(status: StatusCode, body: &Value) -> bool {
    matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        && matches!(body["code"].as_str(), Some("UNAUTHENTICATED" | "FORBIDDEN"))
}

#[tokio::test]
async fn every_route_answers_its_access_to_every_caller() {
    let mut problems = Vec::new();
    for route in ROUTES {
        let path = concrete(route.path);
        let what = format!("{} {}", route.method, route.path);
        // Each caller on a fresh service, to see whether a refusal reached it.
        for caller in [None, Some("not-a-token"), Some(SHOP), Some(OPERATOR)] {
            let (router, service) = app();
            let (status, body, headers) =
                send(&router, request(&route.method, &path, caller)).await;
            let role_allows = match (route.access, caller) {
                (Access::Public, _) => true,
                (_, None | Some("not-a-token")) => false,
                (Access::Shop, Some(_)) => true,
                (Access::Operator, Some(token)) => token == OPERATOR,
            };
            let label = format!("{what} as {caller:?}: {status} {body}");
            if role_allows {
                if is_refusal(status, &body) {
                    problems.push(format!("{label}: refused, should be allowed"));
                }
                continue;
            }
            if !service.calls().is_empty() {
                problems.push(format!(
                    "{label}: reached the service {:?}",
                    service.calls()
                ));
            }
            let expected = match caller {
                None | Some("not-a-token") => "UNAUTHENTICATED",
                Some(_) => "FORBIDDEN",
            };
            if route.page && expected == "UNAUTHENTICATED" {
                let location = headers.get(header::LOCATION).map(|l| l.as_bytes());
                if status != StatusCode::SEE_OTHER || location != Some(b"/signin") {
                    problems.push(format!("{label}: a page should send to /signin"));
                }
                continue;
            }
            let want_status = if expected == "FORBIDDEN" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            if status != want_status || body["code"] != expected {
                problems.push(format!("{label}: expected {want_status} {expected}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn no_method_or_path_outside_the_table_is_served() {
    let (router, service) = app();
    let paths: BTreeSet<&str> = ROUTES.iter().map(|r| r.path).collect();
    for pattern in paths {
        for method in &METHODS {
            if ROUTES
                .iter()
                .any(|r| r.path == pattern && r.method == *method)
            {
                continue;
            }
            let (status, body, _) =
                send(&router, request(method, &concrete(pattern), Some(OPERATOR))).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (StatusCode::METHOD_NOT_ALLOWED, Some("METHOD_NOT_ALLOWED")),
                "{method} {pattern}"
            );
        }
    }
    let (status, body, _) =
        send(&router, request(&Method::GET, "/api/admin", Some(OPERATOR))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
    assert!(service.calls().is_empty(), "{:?}", service.calls());
}

#[test]
fn every_route_has_the_access_decided_for_it() {
    let table: BTreeSet<(String, &str, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path, format!("{:?}", r.access)))
        .collect();
    let decided: BTreeSet<(String, &str, String)> = DECIDED
        .iter()
        .map(|(m, p, a)| ((*m).to_owned(), *p, format!("{a:?}")))
        .collect();
    let undecided: Vec<_> = table.difference(&decided).collect();
    let gone: Vec<_> = decided.difference(&table).collect();
    assert!(
        undecided.is_empty() && gone.is_empty(),
        "routes whose access is not the decided one: {undecided:?}; decided but not in the table: {gone:?}"
    );
    for route in ROUTES {
        assert!(
            route.access != Access::Operator || route.side == Side::Operator,
            "{} {}: an operator route is served on the operator listener only",
            route.method,
            route.path
        );
    }
}

/// The router is built from the table only: no other place adds a route.
#[test]
fn routes_are_added_nowhere_but_the_table() {
    let roots = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/src"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../ordermq/src"),
    ];
    let mut offenders = Vec::new();
    let mut dirs: Vec<std::path::PathBuf> = roots.iter().map(Into::into).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("api/src/routes.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for adds_routes in [
                ".route(",
                ".nest(",
                ".route_service(",
                ".nest_service(",
                ".merge(",
            ] {
                if text.contains(adds_routes) {
                    offenders.push(format!("{} uses {adds_routes}", path.display()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "routes outside the table: {offenders:?}"
    );
}

#[tokio::test]
async fn beside_an_operator_listener_each_route_is_served_on_its_side_only() {
    let service = Arc::new(FakeService::default());
    let public = router_for(state(service.clone()), Listener::Public);
    let operator = router_for(state(service), Listener::Operator);
    for route in ROUTES {
        let path = concrete(route.path);
        for (listener, router, served) in [
            ("public", &public, route.side != Side::Operator),
            ("operator", &operator, route.side != Side::Public),
        ] {
            let (status, body, _) =
                send(router, request(&route.method, &path, Some(OPERATOR))).await;
            let not_found = status == StatusCode::NOT_FOUND && body["code"] == "NOT_FOUND";
            assert_eq!(
                !not_found, served,
                "{} {} on the {listener} listener: {status} {body}",
                route.method, route.path
            );
        }
    }
}

#[tokio::test]
async fn a_systems_own_listener_serves_only_health_and_a_users_records() {
    let system = router_for(state(Arc::new(FakeService::default())), Listener::System);
    let served = ["/healthz", "/api/users/{id}", "/api/users/{id}/{kind}"];
    for route in ROUTES {
        let path = concrete(route.path);
        let (status, body, _) = send(&system, request(&route.method, &path, Some(OPERATOR))).await;
        let not_found = status == StatusCode::NOT_FOUND && body["code"] == "NOT_FOUND";
        assert_eq!(
            !not_found,
            served.contains(&route.path),
            "{} {} on a system's listener: {status} {body}",
            route.method,
            route.path
        );
    }
}

/// The `name=value` of a `Set-Cookie`.
fn cookie_pair(headers: &header::HeaderMap) -> String {
    headers
        .get(header::SET_COOKIE)
        .expect("a Set-Cookie")
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn sign_in(token: &str) -> Request<Body> {
    Request::post("/signin")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::ORIGIN, "http://127.0.0.1:8080")
        .body(Body::from(json!({ "token": token }).to_string()))
        .unwrap()
}

fn with_cookie(method: Method, path: &str, cookie: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::COOKIE, cookie)
}

#[tokio::test]
async fn the_dashboard_signs_in_with_an_operator_token_and_its_cookie_is_csrf_safe() {
    let (router, service) = app();
    let cookie = only_an_operator_signs_in_from_this_site(&router).await;
    the_session_opens_the_dashboard_and_its_reads(&router, &cookie).await;
    a_change_with_the_cookie_needs_the_csrf_header(&router, &service, &cookie).await;
    signing_out_altering_or_a_restart_ends_the_session(&router, &cookie).await;
}

/// The sign-in refuses unknown tokens, shop tokens and other sites; an
/// operator's token gets a strict, HTTP-only cookie, returned as `name=value`.
async fn only_an_operator_signs_in_from_this_site(router: &Router) -> String {
    // Without a session the dashboard sends the browser to the sign-in page.
    let (status, _, headers) = send(router, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/signin");

    let (status, body, _) = send(router, sign_in("not-a-token")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED"))
    );
    let (status, body, _) = send(router, sign_in(SHOP)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("FORBIDDEN"))
    );
    let mut foreign = sign_in(OPERATOR);
    foreign
        .headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    let (status, _, _) = send(router, foreign).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a sign-in from another site");

    let (status, _, headers) = send(router, sign_in(OPERATOR)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let set_cookie = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    cookie_pair(&headers)
}

async fn the_session_opens_the_dashboard_and_its_reads(router: &Router, cookie: &str) {
    let (status, _, headers) = send(
        router,
        with_cookie(Method::GET, "/", cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // The dashboard's own reads.
    for path in ["/api/stats", "/api/products"] {
        let (status, body, _) = send(
            router,
            with_cookie(Method::GET, path, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert!(!is_refusal(status, &body), "{path}: {status} {body}");
    }
}

async fn a_change_with_the_cookie_needs_the_csrf_header(
    router: &Router,
    service: &FakeService,
    cookie: &str,
) {
    // A change with the cookie needs the CSRF header and no foreign origin.
    let calls_before = service.calls().len();
    let retry = |csrf: bool, origin: Option<&str>| {
        let mut builder = with_cookie(Method::POST, "/api/refunds/R1/retry", cookie);
        if csrf {
            builder = builder.header(CSRF_HEADER, "1");
        }
        if let Some(origin) = origin {
            builder = builder.header(header::ORIGIN, origin);
        }
        builder.body(Body::empty()).unwrap()
    };
    for (csrf, origin) in [
        (false, None),
        (true, Some("https://evil.example")),
        (false, Some("http://127.0.0.1:8080")),
    ] {
        let (status, body, _) = send(router, retry(csrf, origin)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("FORBIDDEN")),
            "csrf header {csrf}, origin {origin:?}"
        );
    }
    assert_eq!(
        service.calls().len(),
        calls_before,
        "a refused change reached the service"
    );
    let (status, body, _) = send(router, retry(true, Some("http://127.0.0.1:8080"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "reached the handler: {body}");
    assert_eq!(body["code"], "REFUND_NOT_FOUND");
    assert_eq!(
        service.calls().last(),
        Some(&Call::RetryRefund(
            RefundId::parse("R1").unwrap(),
            Actor::parse("ops1").unwrap()
        )),
        "the session's token name is the retry's actor"
    );
}

async fn signing_out_altering_or_a_restart_ends_the_session(router: &Router, cookie: &str) {
    // Signing out clears the cookie; an altered cookie is no session.
    let (status, _, headers) = send(
        router,
        with_cookie(Method::POST, "/signout", cookie)
            .header(CSRF_HEADER, "1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let altered = cookie.replacen("ops1.", "shop1.", 1);
    let (status, body, _) = send(
        router,
        with_cookie(Method::GET, "/api/stats", &altered)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED"))
    );
    // Another process (a restart) has another key: the session is gone.
    let other = ordermq_api::router(state(Arc::new(FakeService::default())));
    let (status, _, _) = send(
        &other,
        with_cookie(Method::GET, "/api/stats", cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

//! The route table: every route of ordermq with who may call it and on
//! which listener it is served, in one place.
//!
//! Why a table: an access decision written next to each route cannot be
//! forgotten — [`Route`] has no default for `access`, the router is built
//! only from [`ROUTES`], and a test walks the table through the built router
//! (every route, every method) checking each one's 401/403 answers. Adding a
//! route is adding an entry, and the entry says who may call it.
//!
//! Access is checked before the handler runs (and before a body is read):
//! no credential or an unknown one is 401 `UNAUTHENTICATED` (a page
//! redirects to the sign-in instead), a known caller whose role may not use
//! the route is 403 `FORBIDDEN`.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use ordermq_domain::ErrorCode;

use crate::auth::{Auth, Caller, Role};
use crate::error::ApiError;
use crate::session::{CSRF_HEADER, csrf_safe, is_change};
use crate::signature::now_millis;
use crate::{ApiState, handlers, sales};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health checks, the dashboard's sign-in, and the third
    /// parties' callbacks (their signature is their credential).
    Public,
    /// A `shop` or `operator` token.
    Shop,
    /// An `operator` token or a signed-in dashboard session.
    Operator,
}

impl Access {
    /// The role a caller needs; `None` for public routes.
    pub fn role(self) -> Option<Role> {
        match self {
            Self::Public => None,
            Self::Shop => Some(Role::Shop),
            Self::Operator => Some(Role::Operator),
        }
    }
}

/// Where a route is served when operator routes have their own listener
/// (`operator_http_addr`); with one listener, everything is served there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// On both listeners (health checks, the shop's routes: the dashboard
    /// reads orders and users too).
    Both,
    /// Only on the public listener (the third parties' callbacks).
    Public,
    /// Only on the operator listener (operator routes and the dashboard's
    /// sign-in); 404 on the public one.
    Operator,
}

/// Which routes one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The only listener: every route.
    Combined,
    /// The public listener beside an operator listener.
    Public,
    /// The operator listener.
    Operator,
    /// A downstream system's own process (`role credit`, …): the health
    /// check and a user's records, answered from that system's database
    /// only; nothing that touches orders.
    System,
}

/// The routes a system's own process serves (see [`Listener::System`]).
const SYSTEM_PATHS: [&str; 3] = ["/healthz", "/api/users/{id}", "/api/users/{id}/{kind}"];

impl Listener {
    /// Whether this listener serves routes of `side`.
    pub fn serves(self, side: Side) -> bool {
        match (self, side) {
            (Self::System, _) => false,
            (Self::Combined, _) | (_, Side::Both) => true,
            (Self::Public, Side::Public) | (Self::Operator, Side::Operator) => true,
            (Self::Public, Side::Operator) | (Self::Operator, Side::Public) => false,
        }
    }

    /// Whether this listener serves `route`.
    pub fn serves_route(self, route: &Route) -> bool {
        match self {
            Self::System => SYSTEM_PATHS.contains(&route.path),
            _ => self.serves(route.side),
        }
    }
}

/// One route: method, path, who may call it, where it is served.
#[derive(Debug)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path as axum writes it (`/api/orders/{id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Where it is served beside an operator listener.
    pub side: Side,
    /// A page for browsers: refused by redirecting to the sign-in page.
    pub page: bool,
    handler: fn(MethodFilter) -> MethodRouter<ApiState>,
}

macro_rules! route {
    ($method:ident $path:literal, $access:ident, $side:ident, $handler:path) => {
        route!($method $path, $access, $side, $handler, page: false)
    };
    ($method:ident $path:literal, $access:ident, $side:ident, $handler:path, page: $page:expr) => {
        Route {
            method: Method::$method,
            path: $path,
            access: Access::$access,
            side: Side::$side,
            page: $page,
            handler: |filter| on(filter, $handler),
        }
    };
}

/// Every route of ordermq. The product list needs a `shop` token: ordermq is
/// the shop's backend service, shoppers reach it through the shop, and its
/// stock figures are the business's own.
pub static ROUTES: &[Route] = &[
    route!(GET "/healthz", Public, Both, handlers::health),
    route!(POST "/api/payments/notify", Public, Public, handlers::payment_notify),
    route!(POST "/api/logistics/notify", Public, Public, handlers::logistics_notify),
    route!(GET "/signin", Public, Operator, handlers::signin_page, page: true),
    route!(POST "/signin", Public, Operator, handlers::signin),
    route!(GET "/api/products", Shop, Both, handlers::list_products),
    route!(POST "/api/orders", Shop, Both, handlers::create_order),
    route!(GET "/api/orders/{id}", Shop, Both, handlers::get_order),
    route!(GET "/api/users/{id}", Shop, Both, handlers::user_activity),
    route!(GET "/api/users/{id}/{kind}", Shop, Both, handlers::user_records),
    route!(GET "/", Operator, Operator, handlers::dashboard, page: true),
    route!(POST "/signout", Operator, Operator, handlers::signout),
    route!(POST "/api/orders/{id}/refund", Operator, Operator, handlers::refund_order),
    route!(POST "/api/refunds/{id}/retry", Operator, Operator, handlers::retry_refund),
    route!(GET "/api/stats", Operator, Operator, handlers::stats),
    route!(POST "/api/sales", Operator, Operator, sales::create_sale),
    route!(GET "/api/sales", Operator, Operator, sales::list_sales),
    route!(GET "/api/sales/{id}", Operator, Operator, sales::get_sale),
    route!(POST "/api/sales/{id}/attempts", Shop, Both, sales::attempt),
    route!(GET "/api/attempts/{id}", Shop, Both, sales::get_attempt),
    route!(GET "/api/attempts/{id}/events", Shop, Both, sales::attempt_events),
];

/// The routes `listener` serves, each behind its access check.
pub(crate) fn build(state: &ApiState, listener: Listener) -> axum::Router<ApiState> {
    let mut paths: Vec<(&'static str, MethodRouter<ApiState>)> = Vec::new();
    for route in ROUTES.iter().filter(|r| listener.serves_route(r)) {
        let filter =
            MethodFilter::try_from(route.method.clone()).expect("the table uses standard methods");
        let mut method_router = (route.handler)(filter);
        if let Some(role) = route.access.role() {
            let guard = Guard {
                auth: state.auth.clone(),
                role,
                page: route.page,
            };
            method_router = method_router.route_layer(middleware::from_fn_with_state(guard, check));
        }
        match paths.iter_mut().find(|(path, _)| *path == route.path) {
            Some((_, existing)) => {
                *existing = std::mem::take(existing).merge(method_router);
            }
            None => paths.push((route.path, method_router)),
        }
    }
    paths
        .into_iter()
        .fold(axum::Router::new(), |router, (path, methods)| {
            router.route(path, methods)
        })
}

/// What one route's access check needs.
#[derive(Debug, Clone)]
struct Guard {
    auth: Auth,
    role: Role,
    page: bool,
}

/// The access check: the caller is known and its role may use the route.
/// A refusal leaves the body unread, so it closes the connection (as 413
/// and 415 do: a keep-alive client must not send its next request on it).
async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let mut response = admit(&guard, request, next).await;
    if matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::SEE_OTHER
    ) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn admit(guard: &Guard, mut request: Request, next: Next) -> Response {
    match guard.auth.caller(&request) {
        Ok(caller) if caller.role.may(guard.role) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(caller) => forbidden(format!(
            "token {:?} has the role {}; this route needs {}",
            caller.name, caller.role, guard.role
        ))
        .into_response(),
        Err(refusal) if guard.page && refusal.code == ErrorCode::Unauthenticated => {
            Redirect::to("/signin").into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
}

impl Auth {
    /// The caller of `request`: its bearer token, or else its session cookie.
    fn caller(&self, request: &Request) -> Result<Caller, ApiError> {
        let headers = request.headers();
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            return token
                .and_then(|token| self.tokens.caller(token))
                .ok_or_else(|| ApiError::unauthenticated("unknown or malformed bearer token"));
        }
        match self.sessions.name(headers, now_millis()) {
            None => Err(ApiError::unauthenticated(
                "this route needs a credential: Authorization: Bearer <token> \
                 (or the dashboard's sign-in at /signin)",
            )),
            Some(Err(())) => Err(ApiError::unauthenticated(
                "the session has expired or is not valid: sign in again at /signin",
            )),
            Some(Ok(name)) => {
                let caller = self.tokens.by_name(&name).ok_or_else(|| {
                    ApiError::unauthenticated("the session's token is no longer configured")
                })?;
                if is_change(request.method()) && !csrf_safe(headers) {
                    return Err(forbidden(format!(
                        "a change made with the session cookie needs the {CSRF_HEADER}: 1 \
                         header and no foreign Origin"
                    )));
                }
                Ok(caller)
            }
        }
    }
}

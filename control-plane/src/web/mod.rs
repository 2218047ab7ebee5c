//! The web view under `/ui/`: server-rendered pages of the fleet and its
//! results for administrators, on the admin surface of the API.
//!
//! Sign-in takes the admin token in a form (never in a URL) and starts a
//! server-side session ([`crate::session`]) held by an HttpOnly,
//! SameSite=Strict cookie (Secure over TLS). Every form that changes
//! something carries the session's CSRF token; the sign-in form carries a
//! token it set in a short-lived cookie (double submit), so a page
//! elsewhere cannot sign a browser in either. Sign-in attempts share the
//! rate limit of the other unauthenticated routes. Every answer carries a
//! Content-Security-Policy that allows no script at all and styles only
//! from `/ui/style.css`, besides escaping every value (`pages`).

mod pages;

use std::time::{Duration, Instant};

use axum::Form;
use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::map_response;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use maud::Markup;
use serde::Deserialize;

use crate::auth::Peer;
use crate::db::ResultFilter;
use crate::error::StoreError;
use crate::guard::{AuthFailure, Principal};
use crate::secrets::{constant_time_eq, random_token};
use crate::state::AppState;
use pages::{Facets, Section};

/// The session cookie.
const SESSION_COOKIE: &str = "acp_session";
/// The sign-in form's own CSRF cookie.
const SIGN_IN_COOKIE: &str = "acp_sign_in";
/// How long a sign-in form stays usable.
const SIGN_IN_FORM_TTL: Duration = Duration::from_secs(600);
/// Rows in a page of results.
const RESULTS_PER_PAGE: usize = 50;
/// Records in a page of a stream's history.
const HISTORY_PER_PAGE: usize = 20;
/// The policy of every page: nothing but this origin's style sheet, no
/// script, no frames, forms only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The web view's routes (state still to be supplied).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/style.css", get(style))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/results", get(results))
        .route("/ui/summary", get(summary))
        .route("/ui/streams/{uuid}", get(stream))
        .route("/ui/fleet", get(fleet))
        .route("/ui/enrollment-tokens", post(create_enrollment_token))
        .layer(map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// An HTML answer with `status`.
fn page(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A failure shown as a page: the store's complaint about the request
/// (400), or a generic 500 (details in the log, not the page).
struct WebError(Box<Response>);

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<StoreError> for WebError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Invalid(message) => WebError(Box::new(page(
                StatusCode::BAD_REQUEST,
                pages::message("Bad request", &message),
            ))),
            other => {
                tracing::error!(error = %other, "web view: the store failed");
                WebError(Box::new(page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    pages::message(
                        "Server error",
                        "the control plane could not read its database; see its log",
                    ),
                )))
            }
        }
    }
}

fn refused(status: StatusCode, title: &str, text: &str) -> WebError {
    WebError(Box::new(page(status, pages::message(title, text))))
}

/// The value of cookie `name` in the request, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, limited to `/ui`,
/// Secure when the server speaks TLS; `max_age` zero deletes it.
fn set_cookie(state: &AppState, name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let secure = if state.ca.is_some() { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// A signed-in administrator: a live session from the cookie. Pages
/// answer a request without one with a redirect to the sign-in page.
struct SignedIn {
    session: String,
    csrf: String,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let session = cookie(&parts.headers, SESSION_COOKIE).map(str::to_string);
        let csrf = session
            .as_deref()
            .and_then(|id| state.guards.sessions.touch(id, Instant::now()));
        match (session, csrf) {
            (Some(session), Some(csrf)) => Ok(SignedIn { session, csrf }),
            _ => Err(Redirect::to("/ui/sign-in").into_response()),
        }
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for SignedIn {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <SignedIn as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

impl SignedIn {
    /// Refuses a form whose CSRF token is not this session's.
    fn check_csrf(&self, sent: &str) -> Result<(), WebError> {
        if !sent.is_empty() && constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(refused(
                StatusCode::FORBIDDEN,
                "Form refused",
                "the form's CSRF token is missing or wrong: reload the page and send the form again",
            ))
        }
    }
}

fn form<T>(form: Result<Form<T>, FormRejection>) -> Result<T, WebError> {
    form.map(|Form(form)| form).map_err(|e| {
        refused(
            StatusCode::BAD_REQUEST,
            "Bad form",
            &format!("the form could not be read: {e}"),
        )
    })
}

async fn home(signed_in: Option<SignedIn>) -> Redirect {
    match signed_in {
        Some(_) => Redirect::to("/ui/results"),
        None => Redirect::to("/ui/sign-in"),
    }
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("style.css"),
    )
        .into_response()
}

/// The sign-in form with a fresh CSRF token in its cookie.
fn sign_in_form(
    state: &AppState,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, WebError> {
    let csrf = random_token()?;
    let mut response = page(status, pages::sign_in(&csrf, error));
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, SIGN_IN_COOKIE, &csrf, SIGN_IN_FORM_TTL),
    );
    Ok(response)
}

async fn sign_in_page(
    State(state): State<AppState>,
    signed_in: Option<SignedIn>,
) -> Result<Response, WebError> {
    if signed_in.is_some() {
        return Ok(Redirect::to("/ui/results").into_response());
    }
    sign_in_form(&state, StatusCode::OK, None)
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

async fn sign_in(
    State(state): State<AppState>,
    Peer(source): Peer,
    headers: HeaderMap,
    sent: Result<Form<SignInForm>, FormRejection>,
) -> Result<Response, WebError> {
    // The same budget as enrollment and the token endpoint.
    if let Some(address) = source
        && let Err(wait) = state
            .guards
            .unauthenticated
            .check(address.ip(), Instant::now())
    {
        let seconds = wait.as_secs().max(1);
        let mut response = page(
            StatusCode::TOO_MANY_REQUESTS,
            pages::message(
                "Too many attempts",
                &format!(
                    "too many sign-in attempts from {}; try again in {seconds} s",
                    address.ip()
                ),
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Ok(response);
    }
    let sent = form(sent)?;
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or("");
    if expected.is_empty()
        || sent.csrf.is_empty()
        || !constant_time_eq(expected.as_bytes(), sent.csrf.as_bytes())
    {
        return sign_in_form(
            &state,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired or did not come from this page; try again."),
        );
    }
    if !state.config.is_admin_token(&sent.token) {
        state.authentication_failed(source, Principal::Admin, AuthFailure::WrongAdminToken);
        return sign_in_form(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
        );
    }
    let session = state.guards.sessions.create(Instant::now())?;
    tracing::info!(source = ?source, "web view: administrator signed in");
    let mut response = Redirect::to("/ui/results").into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(
            &state,
            SESSION_COOKIE,
            &session.id,
            state.config.session_ttl,
        ),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(&state, SIGN_IN_COOKIE, "", Duration::ZERO),
    );
    Ok(response)
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(state): State<AppState>,
    signed_in: SignedIn,
    sent: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, WebError> {
    signed_in.check_csrf(&form(sent)?.csrf)?;
    state.guards.sessions.end(&signed_in.session);
    let mut response = Redirect::to("/ui/sign-in").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", Duration::ZERO),
    );
    Ok(response)
}

/// The results page's query: empty fields (as a form sends them) mean
/// "any".
#[derive(Deserialize, Default)]
struct ResultsQuery {
    status: Option<String>,
    severity: Option<String>,
    plugin: Option<String>,
    runtime: Option<String>,
    reference: Option<String>,
    after: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn bad_query(e: QueryRejection) -> WebError {
    refused(StatusCode::BAD_REQUEST, "Bad request", &e.to_string())
}

async fn results(
    State(state): State<AppState>,
    signed_in: SignedIn,
    query: Result<Query<ResultsQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let Query(query) = query.map_err(bad_query)?;
    let filter = ResultFilter {
        status: non_empty(query.status),
        severity: non_empty(query.severity),
        plugin: non_empty(query.plugin),
        runtime: non_empty(query.runtime),
        reference: non_empty(query.reference),
        after: non_empty(query.after),
        limit: Some(RESULTS_PER_PAGE),
    };
    let stale_after = state.config.stale_after;
    let shown = filter.clone();
    let (page, (plugins, severities), runtimes) = state
        .store
        .call(move |db| {
            Ok((
                db.latest_results(&filter)?,
                db.result_facets()?,
                db.list_runtimes(Utc::now(), stale_after)?,
            ))
        })
        .await?;
    let runtimes: Vec<(String, String)> = runtimes
        .into_iter()
        .filter(|r| !r.revoked)
        .map(|r| (r.id, r.name))
        .collect();
    let facets = Facets {
        plugins: &plugins,
        severities: &severities,
        runtimes: &runtimes,
    };
    let body = pages::results(&shown, &facets, &page.results, page.next.as_deref());
    Ok(page_of(
        StatusCode::OK,
        "Results",
        Section::Results,
        &signed_in,
        body,
    ))
}

fn page_of(
    status: StatusCode,
    title: &str,
    section: Section,
    signed_in: &SignedIn,
    body: Markup,
) -> Response {
    page(
        status,
        pages::layout(title, Some(section), &signed_in.csrf, body),
    )
}

async fn summary(State(state): State<AppState>, signed_in: SignedIn) -> Result<Response, WebError> {
    let checks = state.store.call(|db| db.check_summary()).await?;
    Ok(page_of(
        StatusCode::OK,
        "Checks",
        Section::Summary,
        &signed_in,
        pages::summary(&checks),
    ))
}

#[derive(Deserialize, Default)]
struct StreamQuery {
    before: Option<String>,
}

async fn stream(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(uuid): Path<String>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let Query(query) = query.map_err(bad_query)?;
    let id = uuid.clone();
    let found = state
        .store
        .call(move |db| {
            let Some(latest) = db.latest_of_stream(&id)? else {
                return Ok(None);
            };
            let page = db.stream_history(&id, Some(HISTORY_PER_PAGE), query.before.as_deref())?;
            Ok(Some((latest, page)))
        })
        .await?;
    let Some((latest, history)) = found else {
        return Err(refused(
            StatusCode::NOT_FOUND,
            "Not found",
            "no stream has this id",
        ));
    };
    Ok(page_of(
        StatusCode::OK,
        "Stream history",
        Section::Results,
        &signed_in,
        pages::stream(&latest, &history, &latest.uuid),
    ))
}

/// The fleet page, with a token just created when there is one.
async fn fleet_page(
    state: &AppState,
    signed_in: &SignedIn,
    created: Option<(&str, &str, &str)>,
) -> Result<Response, WebError> {
    let stale_after = state.config.stale_after;
    let (runtimes, mut details, tokens) = state
        .store
        .call(move |db| {
            let now = Utc::now();
            Ok((
                db.list_runtimes(now, stale_after)?,
                db.fleet_details()?,
                db.list_enrollment_tokens(now)?,
            ))
        })
        .await?;
    let runtimes: Vec<_> = runtimes
        .into_iter()
        .map(|r| {
            let extra = details.remove(&r.id).unwrap_or_default();
            (r, extra)
        })
        .collect();
    let status = if created.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(page_of(
        status,
        "Fleet",
        Section::Fleet,
        signed_in,
        pages::fleet(&runtimes, &tokens, &signed_in.csrf, created),
    ))
}

async fn fleet(State(state): State<AppState>, signed_in: SignedIn) -> Result<Response, WebError> {
    fleet_page(&state, &signed_in, None).await
}

#[derive(Deserialize)]
struct NewTokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    ttl: String,
}

async fn create_enrollment_token(
    State(state): State<AppState>,
    signed_in: SignedIn,
    sent: Result<Form<NewTokenForm>, FormRejection>,
) -> Result<Response, WebError> {
    let sent = form(sent)?;
    signed_in.check_csrf(&sent.csrf)?;
    let ttl = humantime::parse_duration(sent.ttl.trim()).map_err(|e| {
        refused(
            StatusCode::BAD_REQUEST,
            "Bad form",
            &format!("invalid lifetime: {e}"),
        )
    })?;
    let group = sent.group.trim().to_string();
    let token = state
        .store
        .call(move |db| db.create_enrollment_token(&group, ttl, Utc::now()))
        .await?;
    tracing::info!(group = %token.group, expires_at = %token.expires_at, "enrollment token created in the web view");
    fleet_page(
        &state,
        &signed_in,
        Some((&token.token, &token.group, &token.expires_at)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; acp_session=xyz; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}

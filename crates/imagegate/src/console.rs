//! The web console's static files, embedded in the binary and served under
//! `/console`. The console is only a client: the browser signs every request
//! with the user's key (TC3, WebCrypto) and sends it to `POST /` like any
//! SDK, so these routes hand out files and nothing else.
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles and
//! connections only from this origin, no inline script, no framing, so that
//! an image name crafted as markup cannot run in the page that holds the key.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../console/index.html");
const STYLE_CSS: &str = include_str!("../console/style.css");
const FAVICON_SVG: &str = include_str!("../console/favicon.svg");

/// The page's JavaScript modules, one job each (see each file's head):
/// loaded by `app.js` with `import`, from this origin only.
const MODULES: &[(&str, &str)] = &[
    ("app.js", include_str!("../console/app.js")),
    ("api.js", include_str!("../console/api.js")),
    ("detail.js", include_str!("../console/detail.js")),
    ("dom.js", include_str!("../console/dom.js")),
    ("export.js", include_str!("../console/export.js")),
    ("facts.js", include_str!("../console/facts.js")),
    ("format.js", include_str!("../console/format.js")),
    ("importform.js", include_str!("../console/importform.js")),
    ("list.js", include_str!("../console/list.js")),
    ("progress.js", include_str!("../console/progress.js")),
    ("regions.js", include_str!("../console/regions.js")),
    ("route.js", include_str!("../console/route.js")),
    ("share.js", include_str!("../console/share.js")),
    ("store.js", include_str!("../console/store.js")),
    ("sync.js", include_str!("../console/sync.js")),
    ("tc3.js", include_str!("../console/tc3.js")),
];

/// `style-src 'self'` still lets the script set `element.style` properties
/// (CSSOM is not inline style).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the binary; a stale module beside a new
    // index.html would break the page after an upgrade.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn favicon() -> Response {
    asset("image/svg+xml", FAVICON_SVG)
}

/// Routes `/console` (a redirect), `/console/`, and the page's assets under
/// `/console/`.
/// Merge into the server's router; it needs no state.
pub fn router() -> Router {
    let mut r = Router::new()
        // One canonical address, so relative links and bookmarks agree.
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(index))
        .route("/console/index.html", get(index))
        .route("/console/style.css", get(style_css))
        .route("/console/favicon.svg", get(favicon));
    for &(name, body) in MODULES {
        r = r.route(
            &format!("/console/{name}"),
            get(move || async move { asset("text/javascript; charset=utf-8", body) }),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_path(path: &str) -> Response {
        router()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn body_text(resp: Response) -> String {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn assets_have_types_and_policy() {
        for (path, ctype, marker) in [
            ("/console/", "text/html; charset=utf-8", "<!doctype html>"),
            (
                "/console/tc3.js",
                "text/javascript; charset=utf-8",
                "TC3-HMAC-SHA256",
            ),
            (
                "/console/app.js",
                "text/javascript; charset=utf-8",
                "import",
            ),
            ("/console/style.css", "text/css; charset=utf-8", "@media"),
            ("/console/favicon.svg", "image/svg+xml", "<svg"),
        ] {
            let resp = get_path(path).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let h = resp.headers();
            assert_eq!(h[header::CONTENT_TYPE], ctype, "{path}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(body_text(resp).await.contains(marker), "{path}");
        }
        let resp = get_path("/console").await;
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(resp.headers()[header::LOCATION], "/console/");
        assert_eq!(
            get_path("/console/nope.js").await.status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn page_loads_nothing_from_elsewhere_and_has_no_inline_script() {
        // The CSP would block these anyway; failing here names the mistake.
        let lower = INDEX_HTML.to_ascii_lowercase();
        for attr in ["src=\"", "href=\""] {
            for (i, _) in lower.match_indices(attr) {
                let value = &lower[i + attr.len()..];
                assert!(
                    value.starts_with("/console/"),
                    "{attr}{}",
                    &value[..value.len().min(40)]
                );
            }
        }
        // No inline event handlers (` onclick=` and the like).
        for (i, _) in lower.match_indices(" on") {
            let name: String = lower[i + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            let after = lower[i + 3 + name.len()..].trim_start();
            assert!(
                name.is_empty() || !after.starts_with('='),
                "inline handler on{name}"
            );
        }
        // Every module the page imports is served, and nothing else is.
        for (name, js) in MODULES {
            for (i, _) in js.match_indices(" from \"./") {
                let rest = &js[i + 9..];
                let imported = &rest[..rest.find('"').unwrap()];
                assert!(
                    MODULES.iter().any(|(n, _)| *n == imported),
                    "{name} imports {imported}, which is not served"
                );
            }
        }
        for (i, _) in lower.match_indices("<script") {
            let tag_end = lower[i..].find('>').map(|e| i + e).unwrap();
            assert!(lower[i..tag_end].contains("src="), "inline <script> at {i}");
        }
        assert!(!lower.contains("<style"), "inline <style>");
        assert!(!lower.contains(" style="), "inline style attribute");
        // Untrusted strings (image names, messages) must reach the page as
        // text only.
        for (name, js) in MODULES {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
            ] {
                assert!(
                    !js.contains(sink),
                    "{name} must build nodes, not HTML ({sink})"
                );
            }
        }
    }
}

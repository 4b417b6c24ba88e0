//! The fake www.google.com: its home page, and 404 for everything else.
//!
//! Owns: the page bytes and the headers a real `GET /` carries (including a cookie, so a test
//! can see what a proxy does with `set-cookie`). Does not own: the SSE probe paths, which
//! `server` routes before asking this module.

use bytes::Bytes;
use hyper::{Method, Response, StatusCode};

use crate::body::{chunks, full, ResBody};

/// The home page (ASCII only, so the ISO-8859-1 label in `content-type` is truthful).
const GOOGLE_HTML: &[u8] = include_bytes!("google.html");

/// How many chunks the home page is sent in (real Google streams it chunked too).
const HOME_PAGE_CHUNKS: usize = 3;

/// The exact bytes of the fake's home page body (`GET /`).
pub fn google_html() -> &'static [u8] {
    GOOGLE_HTML
}

/// The cookie the home page sets, verbatim.
pub const GOOGLE_SET_COOKIE: &str =
    "NID=idagent-fake-nid; expires=Fri, 01-Jan-2038 00:00:00 GMT; path=/; domain=.google.com; HttpOnly";

const NOT_FOUND_HTML: &str = "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  \
    <title>Error 404 (Not Found)!!1</title>\n  <p><b>404.</b> <ins>That\u{2019}s an error.</ins>\n  \
    <p>The requested URL was not found on this server.  <ins>That\u{2019}s all we know.</ins>\n";

/// The answer of the fake to `method path`.
pub(crate) fn respond(method: &Method, path: &str) -> Response<ResBody> {
    if path != "/" {
        return page(StatusCode::NOT_FOUND, "text/html; charset=UTF-8")
            .body(full(NOT_FOUND_HTML))
            .unwrap_or_else(|_| crate::server::internal_error());
    }
    if method != Method::GET && method != Method::HEAD {
        return page(StatusCode::METHOD_NOT_ALLOWED, "text/html; charset=UTF-8")
            .header("allow", "GET, HEAD")
            .body(full(
                "<!DOCTYPE html><title>Error 405 (Method Not Allowed)!!1</title>\n",
            ))
            .unwrap_or_else(|_| crate::server::internal_error());
    }
    let step = GOOGLE_HTML.len().div_ceil(HOME_PAGE_CHUNKS);
    let parts = GOOGLE_HTML.chunks(step).map(Bytes::from_static);
    page(StatusCode::OK, "text/html; charset=ISO-8859-1")
        .header("cache-control", "private, max-age=0")
        .header("expires", "-1")
        .header(
            "p3p",
            "CP=\"This is not a P3P policy! See g.co/p3phelp for more info.\"",
        )
        .header("x-xss-protection", "0")
        .header("x-frame-options", "SAMEORIGIN")
        .header("set-cookie", GOOGLE_SET_COOKIE)
        .body(chunks(parts))
        .unwrap_or_else(|_| crate::server::internal_error())
}

fn page(status: StatusCode, content_type: &str) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("server", "gws")
}

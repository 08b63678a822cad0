//! The request decoder: an HTTP request as the front hands it to tcapi
//! (method, raw query, headers, body), decoded, its signature checked, and
//! its action's parameters decoded into the typed request.
//!
//! Input layout, chosen so that any bytes make a request: the first byte
//! picks the method (even: POST, odd: GET); the rest splits at the first two
//! blank lines ("\n\n") into the raw query, the headers (one `Name: value`
//! per line) and the body.

use tcapi::RawRequest;

pub fn request(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let method = if pick % 2 == 0 { "POST" } else { "GET" };
    let (query, rest) = split_blank_line(rest);
    let (headers, body) = split_blank_line(rest);
    let query = String::from_utf8_lossy(query);
    let headers = String::from_utf8_lossy(headers);
    let headers: Vec<(&str, &str)> = headers
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name, value.trim_start()))
        .collect();
    let raw = RawRequest {
        method,
        raw_query: &query,
        headers: &headers,
        body,
    };
    if let Ok(signed) = tcapi::decode(&raw) {
        let _ = signed.verify(&raw, "fuzz-secret-key", signed.timestamp);
        let _ = tcapi::decode_action(&signed.action, &signed.params);
    }
}

fn split_blank_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[]),
    }
}

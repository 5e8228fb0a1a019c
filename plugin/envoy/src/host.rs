//! Thin, panic-free wrappers over the proxy-wasm host calls the filter uses.
//! Header values are read as bytes: a non-UTF-8 value must not kill the VM.

use std::time::{Duration, UNIX_EPOCH};

use ephemera_core::filter::LocalReply;
use ephemera_core::filter::edits::Edits;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// A request header: `None` absent, `Some(Err(()))` present but not UTF-8.
pub fn request_header(name: &str) -> Option<Result<String, ()>> {
    match hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name) {
        Ok(Some(bytes)) => Some(String::from_utf8(bytes).map_err(|_| ())),
        _ => None,
    }
}

/// Every value of a request header, in order (UTF-8 ones; a non-UTF-8
/// copy still counts, as an empty value, so repetition is seen).
pub fn request_header_values(name: &str) -> Vec<String> {
    match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
        Ok(pairs) => pairs
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8(v).unwrap_or_default())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Removes a request header (every value).
pub fn remove_request_header(name: &str) {
    let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None);
}

/// Sets a request header, replacing any value.
pub fn set_request_header(name: &str, value: &str) {
    let _ =
        hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value.as_bytes()));
}

/// A response header that must be UTF-8 to be useful.
pub fn response_header(name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name) {
        Ok(Some(bytes)) => String::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// Removes a response header (every value).
pub fn remove_response_header(name: &str) {
    let _ = hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, None);
}

/// The `:status` of the current HTTP call response; `None` when the call
/// failed. A failed call has no response map: reading it is refused by the
/// host (and the SDK panics on that status), so `headers == 0` is checked first.
pub fn call_status(headers: usize) -> Option<String> {
    if headers == 0 {
        None
    } else {
        call_response_header(":status")
    }
}

/// The status and body of the current HTTP call response; no status when
/// the call failed.
pub fn call_answer(headers: usize, body_size: usize) -> (Option<u16>, Vec<u8>) {
    let status = call_status(headers).and_then(|s| s.parse().ok());
    (status, call_response_body(body_size))
}

/// A header of the current HTTP call response.
pub fn call_response_header(name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name) {
        Ok(Some(bytes)) => String::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// The body of the current HTTP call response.
pub fn call_response_body(size: usize) -> Vec<u8> {
    match hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size) {
        Ok(Some(bytes)) => bytes,
        _ => Vec::new(),
    }
}

/// A property as text (e.g. `xds.cluster_name`).
pub fn property(path: &[&str]) -> Option<String> {
    match hostcalls::get_property(path.to_vec()) {
        Ok(Some(bytes)) => String::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// Sends a local reply on the current (effective) stream.
pub fn send_reply(reply: &LocalReply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let _ = hostcalls::send_http_response(
        u32::from(reply.status),
        headers,
        Some(reply.body.as_bytes()),
    );
}

/// Applies a forward's header edits to the current stream: removals, then sets.
pub fn edit_request(edits: &Edits) {
    for name in &edits.remove {
        remove_request_header(name);
    }
    for (name, value) in &edits.set {
        set_request_header(name, value);
    }
}

/// Resumes the current (effective) paused request.
pub fn resume_request() {
    let _ = hostcalls::resume_http_request();
}

/// Makes `context_id` the stream host calls act on; false if it is gone.
pub fn set_effective_context(context_id: u32) -> bool {
    hostcalls::set_effective_context(context_id).is_ok()
}

/// Calls the shim: `GET path` (with `extra` headers) or, with a body, a
/// JSON `POST`; a TCP shim's start secret rides along. Returns the call token.
pub fn call_shim(
    shim: &ephemera_core::filter::config::ShimConfig,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<u32, proxy_wasm::types::Status> {
    let bearer = shim.bearer.as_ref().map(|b| b.header_value());
    let mut headers = vec![
        (":method", if body.is_some() { "POST" } else { "GET" }),
        (":path", path),
        (":authority", shim.authority.as_str()),
    ];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    if let Some(value) = bearer.as_deref() {
        headers.push(("authorization", value));
    }
    headers.extend_from_slice(extra);
    hostcalls::dispatch_http_call(
        &shim.cluster,
        headers,
        body,
        vec![],
        Duration::from_millis(shim.timeout_ms),
    )
}

//! Header maps: the stream's request and response headers, and a call's answer.

use wasmtime::Linker;

use crate::harness::abi::{Headers, encode_map, map};
use crate::harness::proxy_wasm::memory::{BAD_ARGUMENT, Cx, OK, give, give_found, read, text};
use crate::harness::proxy_wasm::state::HostState;

fn headers_of(state: &HostState, map_type: i32) -> Option<&Headers> {
    match map_type {
        map::REQUEST_HEADERS => state.request_headers.get(&state.effective),
        map::RESPONSE_HEADERS => state.response_headers.get(&state.effective),
        map::CALL_RESPONSE_HEADERS => state.delivering.as_ref().map(|(h, _)| h),
        _ => None,
    }
}

fn headers_of_mut(state: &mut HostState, map_type: i32) -> Option<&mut Headers> {
    let id = state.effective;
    match map_type {
        map::REQUEST_HEADERS => Some(state.request_headers.entry(id).or_default()),
        map::RESPONSE_HEADERS => Some(state.response_headers.entry(id).or_default()),
        _ => None,
    }
}

/// Defines this family's imports.
pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let module = "env";
    l.func_wrap(
        module,
        "proxy_get_header_map_pairs",
        |mut c: Cx<'_>, kind: i32, ptr_out: i32, len_out: i32| {
            let bytes = encode_map(headers_of(c.data(), kind).unwrap_or(&Vec::new()));
            give(&mut c, &bytes, ptr_out, len_out)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        module,
        "proxy_get_header_map_value",
        |mut c: Cx<'_>, kind: i32, kp: i32, kn: i32, ptr_out: i32, len_out: i32| {
            let key = text(&mut c, kp, kn)?.to_ascii_lowercase();
            let value = headers_of(c.data(), kind)
                .and_then(|h| h.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()));
            give_found(&mut c, value, ptr_out, len_out)
        },
    )?;
    l.func_wrap(
        module,
        "proxy_replace_header_map_value",
        |mut c: Cx<'_>, kind: i32, kp: i32, kn: i32, vp: i32, vn: i32| {
            let key = text(&mut c, kp, kn)?.to_ascii_lowercase();
            let value = read(&mut c, vp, vn)?;
            let Some(h) = headers_of_mut(c.data_mut(), kind) else {
                return Ok(BAD_ARGUMENT);
            };
            h.retain(|(k, _)| *k != key);
            h.push((key, value));
            Ok(OK)
        },
    )?;
    l.func_wrap(
        module,
        "proxy_remove_header_map_value",
        |mut c: Cx<'_>, kind: i32, kp: i32, kn: i32| {
            let key = text(&mut c, kp, kn)?.to_ascii_lowercase();
            let Some(h) = headers_of_mut(c.data_mut(), kind) else {
                return Ok(BAD_ARGUMENT);
            };
            h.retain(|(k, _)| *k != key);
            Ok(OK)
        },
    )?;
    Ok(())
}

//! HTTP calls to a cluster (the shim's).

use wasmtime::Linker;

use crate::harness::abi::decode_map;
use crate::harness::proxy_wasm::memory::{BAD_ARGUMENT, Cx, OK, read, text, write_u32};
use crate::harness::proxy_wasm::state::{DispatchedCall, HostState};

/// Defines this family's imports.
pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let module = "env";
    l.func_wrap(
        module,
        "proxy_http_call",
        |mut c: Cx<'_>,
         up: i32,
         un: i32,
         hp: i32,
         hn: i32,
         bp: i32,
         bn: i32,
         _tp: i32,
         _tn: i32,
         timeout: i32,
         token_out: i32| {
            let cluster = text(&mut c, up, un)?;
            let Some(headers) = decode_map(&read(&mut c, hp, hn)?) else {
                return Ok(BAD_ARGUMENT);
            };
            let body = read(&mut c, bp, bn)?;
            if !c.data().clusters.contains(&cluster) {
                return Ok(BAD_ARGUMENT);
            }
            let state = c.data_mut();
            let token = state.next_token;
            state.next_token += 1;
            let call = DispatchedCall {
                token,
                context_id: state.effective,
                cluster,
                headers,
                body,
                timeout_ms: u64::from(timeout as u32),
                at_ms: state.now_ms,
            };
            state.dispatched.push(call.clone());
            state.pending.push(call);
            write_u32(&mut c, token_out, token)?;
            Ok(OK)
        },
    )?;
    Ok(())
}

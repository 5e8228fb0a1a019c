//! Stream control: resume, local replies, and the context a call works on.

use wasmtime::Linker;

use crate::harness::abi::decode_map;
use crate::harness::proxy_wasm::memory::{BAD_ARGUMENT, Cx, OK, read, text};
use crate::harness::proxy_wasm::state::{HostState, LocalReply};

/// Defines this family's imports.
pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let module = "env";
    l.func_wrap(
        module,
        "proxy_continue_stream",
        |mut c: Cx<'_>, _kind: i32| {
            let id = c.data().effective;
            c.data_mut().resumed.insert(id);
            Ok(OK)
        },
    )?;
    l.func_wrap(
        module,
        "proxy_send_local_response",
        |mut c: Cx<'_>,
         status: i32,
         _dp: i32,
         _dn: i32,
         bp: i32,
         bn: i32,
         hp: i32,
         hn: i32,
         _grpc: i32| {
            let body = text(&mut c, bp, bn)?;
            let headers = decode_map(&read(&mut c, hp, hn)?).unwrap_or_default();
            let id = c.data().effective;
            c.data_mut().replies.insert(
                id,
                LocalReply {
                    status: status as u32,
                    body,
                    headers,
                },
            );
            Ok(OK)
        },
    )?;
    l.func_wrap(
        module,
        "proxy_set_effective_context",
        |mut c: Cx<'_>, id: i32| {
            if c.data().contexts.contains(&(id as u32)) {
                c.data_mut().effective = id as u32;
                Ok(OK)
            } else {
                Ok(BAD_ARGUMENT)
            }
        },
    )?;
    Ok(())
}

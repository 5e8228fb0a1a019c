//! Buffers: the plugin configuration and a call's answer body.

use wasmtime::Linker;

use crate::harness::abi::buffer;
use crate::harness::proxy_wasm::memory::{Cx, NOT_FOUND, OK, give};
use crate::harness::proxy_wasm::state::HostState;

/// Defines this family's imports.
pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let module = "env";
    l.func_wrap(
        module,
        "proxy_get_buffer_bytes",
        |mut c: Cx<'_>, kind: i32, start: i32, max: i32, ptr_out: i32, len_out: i32| {
            let data = match kind {
                buffer::PLUGIN_CONFIGURATION => c.data().plugin_config.clone(),
                buffer::VM_CONFIGURATION => Vec::new(),
                buffer::CALL_RESPONSE_BODY => match &c.data().delivering {
                    Some((_, body)) => body.clone(),
                    None => return Ok(NOT_FOUND),
                },
                _ => return Ok(NOT_FOUND),
            };
            let start = (start as u32 as usize).min(data.len());
            let end = start.saturating_add(max as u32 as usize).min(data.len());
            give(&mut c, &data[start..end], ptr_out, len_out)?;
            Ok(OK)
        },
    )?;
    Ok(())
}

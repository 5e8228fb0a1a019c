//! Properties (the cluster a request is routed to, and others set by a test).

use wasmtime::Linker;

use crate::harness::proxy_wasm::memory::{Cx, give_found, text};
use crate::harness::proxy_wasm::state::HostState;

/// Defines this family's imports.
pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let module = "env";
    l.func_wrap(
        module,
        "proxy_get_property",
        |mut c: Cx<'_>, p: i32, n: i32, ptr_out: i32, len_out: i32| {
            let path = text(&mut c, p, n)?;
            let path = path.trim_end_matches('\0').to_owned();
            let value = c.data().properties.get(&path).cloned();
            give_found(&mut c, value, ptr_out, len_out)
        },
    )?;
    Ok(())
}

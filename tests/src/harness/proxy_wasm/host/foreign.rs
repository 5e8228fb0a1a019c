//! Foreign functions: Envoy's native crypto, as the test asks.

use wasmtime::Linker;

use crate::harness::proxy_wasm::memory::{Cx, give_found, read, text};
use crate::harness::proxy_wasm::state::HostState;

/// Defines this family's imports.
pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let module = "env";
    l.func_wrap(
        module,
        "proxy_call_foreign_function",
        |mut c: Cx<'_>, np: i32, nn: i32, ap: i32, an: i32, ptr_out: i32, len_out: i32| {
            let name = text(&mut c, np, nn)?;
            let args = read(&mut c, ap, an)?;
            let reply = c.data().crypto.call(&name, &args);
            give_found(&mut c, reply, ptr_out, len_out)
        },
    )?;
    Ok(())
}

//! Logs, the clock and the tick period.

use wasmtime::Linker;

use crate::harness::proxy_wasm::memory::{Cx, OK, text, write};
use crate::harness::proxy_wasm::state::HostState;

/// Defines this family's imports.
pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let module = "env";
    l.func_wrap(
        module,
        "proxy_log",
        |mut c: Cx<'_>, level: i32, p: i32, n: i32| {
            let message = text(&mut c, p, n)?;
            c.data_mut().logs.push((level, message));
            Ok(OK)
        },
    )?;
    l.func_wrap(
        module,
        "proxy_get_current_time_nanoseconds",
        |mut c: Cx<'_>, out: i32| {
            let ns = c.data().now_ms.saturating_mul(1_000_000);
            write(&mut c, out, &ns.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        module,
        "proxy_set_tick_period_milliseconds",
        |mut c: Cx<'_>, ms: i32| {
            c.data_mut().tick_ms = u64::from(ms as u32);
            Ok(OK)
        },
    )?;
    Ok(())
}

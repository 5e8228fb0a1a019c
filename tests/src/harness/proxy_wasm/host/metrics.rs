//! Metrics: counters and gauges by name.

use wasmtime::Linker;

use crate::harness::proxy_wasm::memory::{Cx, NOT_FOUND, OK, text, write_u32};
use crate::harness::proxy_wasm::state::HostState;

/// Defines this family's imports.
pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let module = "env";
    l.func_wrap(
        module,
        "proxy_define_metric",
        |mut c: Cx<'_>, _kind: i32, p: i32, n: i32, id_out: i32| {
            let name = text(&mut c, p, n)?;
            let ids = &mut c.data_mut().metric_ids;
            let id = ids.iter().position(|m| *m == name).unwrap_or_else(|| {
                ids.push(name.clone());
                ids.len() - 1
            });
            c.data_mut().metrics.entry(name).or_insert(0);
            write_u32(&mut c, id_out, id as u32)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        module,
        "proxy_increment_metric",
        |mut c: Cx<'_>, id: i32, by: i64| {
            let state = c.data_mut();
            let Some(name) = state.metric_ids.get(id as usize).cloned() else {
                return Ok(NOT_FOUND);
            };
            *state.metrics.entry(name).or_insert(0) += by;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        module,
        "proxy_record_metric",
        |mut c: Cx<'_>, id: i32, value: i64| {
            let state = c.data_mut();
            let Some(name) = state.metric_ids.get(id as usize).cloned() else {
                return Ok(NOT_FOUND);
            };
            state.metrics.insert(name, value);
            Ok(OK)
        },
    )?;
    Ok(())
}

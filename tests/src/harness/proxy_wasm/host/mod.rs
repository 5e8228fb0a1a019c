//! The host functions, one module per import family. Only what the filter
//! imports and calls is here; any other import traps, naming itself.

mod buffers;
mod calls;
mod foreign;
mod headers;
mod logging;
mod metrics;
mod properties;
mod streams;
mod wasi;

use wasmtime::Linker;

use super::state::HostState;

/// Defines every host function the harness offers.
pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    logging::define(l)?;
    headers::define(l)?;
    buffers::define(l)?;
    properties::define(l)?;
    streams::define(l)?;
    calls::define(l)?;
    metrics::define(l)?;
    foreign::define(l)?;
    wasi::define(l)
}

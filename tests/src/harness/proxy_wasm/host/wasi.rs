//! WASI preview 1, as much as the filter imports: stdout/stderr to the log, an empty environment, exit, seeded randomness.

use wasmtime::Linker;

use crate::harness::proxy_wasm::memory::{Cx, read, write, write_u32};
use crate::harness::proxy_wasm::state::HostState;

/// Defines this family's imports.
pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let module = "wasi_snapshot_preview1";
    l.func_wrap(
        module,
        "fd_write",
        |mut c: Cx<'_>, fd: i32, iovs: i32, count: i32, written_out: i32| {
            let mut out = Vec::new();
            for i in 0..count {
                let iov = read(&mut c, iovs + i * 8, 8)?;
                let ptr = i32::from_le_bytes(iov[0..4].try_into().unwrap_or_default());
                let len = i32::from_le_bytes(iov[4..8].try_into().unwrap_or_default());
                out.extend(read(&mut c, ptr, len)?);
            }
            let n = out.len() as u32;
            let level = if fd == 2 { 4 } else { 2 };
            c.data_mut()
                .logs
                .push((level, String::from_utf8_lossy(&out).into_owned()));
            write_u32(&mut c, written_out, n)?;
            Ok(0)
        },
    )?;
    l.func_wrap(
        module,
        "environ_sizes_get",
        |mut c: Cx<'_>, count: i32, size: i32| {
            write_u32(&mut c, count, 0)?;
            write_u32(&mut c, size, 0)?;
            Ok(0)
        },
    )?;
    l.func_wrap(module, "environ_get", |_: Cx<'_>, _: i32, _: i32| Ok(0))?;
    l.func_wrap(
        module,
        "proc_exit",
        |_: Cx<'_>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "the plugin exited with {code}"
            )))
        },
    )?;
    l.func_wrap(module, "random_get", |mut c: Cx<'_>, p: i32, n: i32| {
        let mut bytes = Vec::with_capacity(n as u32 as usize + 8);
        while bytes.len() < n as u32 as usize {
            let word = c.data_mut().next_random();
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.truncate(n as u32 as usize);
        write(&mut c, p, &bytes)?;
        Ok(0)
    })?;
    Ok(())
}

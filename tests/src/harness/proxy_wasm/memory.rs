//! Moving bytes across the module's memory, and the ABI's status codes.

use wasmtime::{Caller, Extern};

use super::super::abi::Status;
use super::state::HostState;

/// What a host function is called with.
pub(super) type Cx<'a> = Caller<'a, HostState>;

pub(super) fn memory(caller: &mut Cx<'_>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(wasmtime::Error::msg("the plugin exports no memory")),
    }
}

pub(super) fn read(caller: &mut Cx<'_>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let m = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let data = m.data(&caller);
    data.get(ptr..ptr + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg("the plugin passed memory out of bounds"))
}

pub(super) fn text(caller: &mut Cx<'_>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

pub(super) fn write(caller: &mut Cx<'_>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let m = memory(caller)?;
    m.write(caller, ptr as u32 as usize, bytes)
        .map_err(|_| wasmtime::Error::msg("the plugin passed an output pointer out of bounds"))
}

pub(super) fn write_u32(caller: &mut Cx<'_>, ptr: i32, v: u32) -> wasmtime::Result<()> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Hands `bytes` to the module: allocated by its own allocator, then
/// `(ptr, len)` written to the two output pointers.
pub(super) fn give(
    caller: &mut Cx<'_>,
    bytes: &[u8],
    ptr_out: i32,
    len_out: i32,
) -> wasmtime::Result<()> {
    let alloc = match caller.get_export("proxy_on_memory_allocate") {
        Some(Extern::Func(f)) => f.typed::<i32, i32>(&caller)?,
        _ => return Err(wasmtime::Error::msg("no proxy_on_memory_allocate export")),
    };
    let len = i32::try_from(bytes.len()).map_err(wasmtime::Error::msg)?;
    let ptr = alloc.call(&mut *caller, len)?;
    write(caller, ptr, bytes)?;
    write_u32(caller, ptr_out, ptr as u32)?;
    write_u32(caller, len_out, len as u32)
}

/// Hands over `value`, or answers NotFound.
pub(super) fn give_found(
    caller: &mut Cx<'_>,
    value: Option<Vec<u8>>,
    ptr_out: i32,
    len_out: i32,
) -> wasmtime::Result<i32> {
    match value {
        Some(v) => {
            give(caller, &v, ptr_out, len_out)?;
            Ok(OK)
        }
        None => Ok(NOT_FOUND),
    }
}

pub(super) const OK: i32 = Status::Ok as i32;
pub(super) const NOT_FOUND: i32 = Status::NotFound as i32;
pub(super) const BAD_ARGUMENT: i32 = Status::BadArgument as i32;

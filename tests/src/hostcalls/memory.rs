//! Guest memory: bounds-checked reads and writes, and handing values to the module in memory it allocates.

use super::Ctx;

/// The `len` bytes at `ptr` in guest memory, or `None` if the range is out of bounds.
pub(super) fn slice<'a>(caller: &'a Ctx<'_>, ptr: i32, len: i32) -> Option<&'a [u8]> {
    let memory = caller.data().memory?;
    let data = memory.data(caller);
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    data.get(start..end)
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(super) fn read(caller: &Ctx<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    slice(caller, ptr, len).map(<[u8]>::to_vec)
}

pub(super) fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(memory) = caller.data().memory else {
        return false;
    };
    let data = memory.data_mut(caller);
    let start = ptr as u32 as usize;
    let Some(end) = start.checked_add(bytes.len()) else {
        return false;
    };
    match data.get_mut(start..end) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

pub(super) fn write_u32(caller: &mut Ctx<'_>, ptr: i32, value: u32) -> bool {
    write(caller, ptr, &value.to_le_bytes())
}

pub(super) fn write_u64(caller: &mut Ctx<'_>, ptr: i32, value: u64) -> bool {
    write(caller, ptr, &value.to_le_bytes())
}

/// Allocates in the module with its allocator. A trap inside the allocator is a trap of the
/// host call; a null or out-of-bounds result is `None`.
pub(super) fn allocate(caller: &mut Ctx<'_>, size: usize) -> wasmtime::Result<Option<u32>> {
    let Some(malloc) = caller.data().malloc.clone() else {
        return Ok(None);
    };
    let Ok(size_arg) = i32::try_from(size) else {
        return Ok(None);
    };
    let ptr = malloc.call(&mut *caller, size_arg)? as u32;
    let memory_size = caller
        .data()
        .memory
        .map_or(0, |m| m.data_size(&*caller) as u64);
    if ptr == 0 || u64::from(ptr) + size as u64 > memory_size {
        return Ok(None);
    }
    Ok(Some(ptr))
}

/// proxy-wasm-cpp-host `copyToPointerSize`: hands `bytes` to the module in newly allocated
/// memory and writes the pointer and size. Returns false on a memory error.
pub(super) fn copy_out(
    caller: &mut Ctx<'_>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> wasmtime::Result<bool> {
    let mut pointer = 0u32;
    if !bytes.is_empty() {
        let Some(p) = allocate(caller, bytes.len())? else {
            return Ok(false);
        };
        if !write(caller, p as i32, bytes) {
            return Ok(false);
        }
        pointer = p;
    }
    Ok(write_u32(caller, ptr_ptr, pointer) && write_u32(caller, size_ptr, bytes.len() as u32))
}

pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Text from bytes the host already owns: no copy when they are valid UTF-8.
pub(super) fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

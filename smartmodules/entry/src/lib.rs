//! The function fluvio-smartengine calls for each batch of records (`map`,
//! `filter`, `filter_map`), as `#[smartmodule(map|filter|filter_map)]` of
//! fluvio-smartmodule 0.50 writes it, with its leak closed.
//!
//! The macro's code encodes a batch's output into a buffer, hands its
//! address to the engine (`copy_records`) and forgets it; the engine copies
//! the buffer out once the call has returned and never frees it (its
//! `dealloc` call is commented out). A module's linear memory therefore
//! grew by every byte it output, and the embedded broker rebuilt each chain
//! after 32 MB of output: half a second of compiling for `answer-score`,
//! every 12,000 answers. Here the buffer is kept and freed at the start of
//! the next call, when the engine has copied it, so a module holds at most
//! one batch's output and a chain is never rebuilt for memory.
//!
//! The rest is the macro's code: the same error statuses, and the same
//! bytes in and out, so the engine (and a Fluvio SPU) sees no difference.
//! The decoding and encoding are fluvio-protocol's but for the records'
//! bytes, which are read and written as slices instead of a byte at a time
//! ([`wire`]); and the macro decodes the records from a copy of the whole
//! input, here from the input itself.

use std::sync::Mutex;

pub mod wire;

pub use fluvio_smartmodule::dataplane::smartmodule::SmartModuleKind;
use fluvio_smartmodule::dataplane::smartmodule::{
    SmartModuleOutput, SmartModuleTransformErrorStatus, SmartModuleTransformRuntimeError,
};
use fluvio_smartmodule::{RecordData, Result, SmartModuleRecord};

/// What becomes of a record.
pub enum Out {
    /// Left out of the output.
    Drop,
    /// Passed on as it came.
    Keep,
    /// Passed on with this key and value.
    Set(Option<RecordData>, RecordData),
}

/// Export the function the engine calls for a batch, `map`, `filter` or
/// `filter_map` (the name tells the engine the module's kind), running
/// `each` over its records through [`transform`]:
/// `entry!(map, Map, score)`.
#[macro_export]
macro_rules! entry {
    ($name:ident, $kind:ident, $each:path) => {
        /// The engine's entry point for a batch (`answerloop-smartmodule-entry`:
        /// the macro's code without its leak).
        ///
        /// # Safety
        ///
        /// Called by the engine with the batch it put into this module's memory.
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub unsafe fn $name(ptr: *mut u8, len: usize, version: i16) -> i32 {
            // SAFETY: the engine's arguments, passed on.
            unsafe { $crate::transform(ptr, len, version, $crate::SmartModuleKind::$kind, $each) }
        }
    };
}

/// The last call's output, until the next call frees it.
static LAST_OUTPUT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

#[cfg(target_arch = "wasm32")]
unsafe extern "C" {
    fn copy_records(putr: i32, len: i32);
}

/// Outside WASM there is no engine to hand the output to (this crate is
/// built natively for tests and docs only).
#[cfg(not(target_arch = "wasm32"))]
unsafe fn copy_records(_ptr: i32, _len: i32) {}

/// Run `each` over the batch the engine put at `ptr`, and hand the engine
/// the output; returns the count of records output, or the macro's error
/// status.
///
/// # Safety
///
/// `ptr` and `len` must be what the engine passes to the exported function:
/// a buffer of `len` bytes it allocated with this module's `alloc` and
/// filled with the encoded input. This function takes ownership of it.
pub unsafe fn transform(
    ptr: *mut u8,
    len: usize,
    version: i16,
    kind: SmartModuleKind,
    mut each: impl FnMut(&SmartModuleRecord) -> Result<Out>,
) -> i32 {
    // The engine copied the last call's output when that call returned.
    drop(std::mem::take(&mut *last_output()));
    // SAFETY: the caller's contract: the engine's buffer, now ours.
    let input = unsafe { Vec::from_raw_parts(ptr, len, len) };
    let Ok((base_offset, records)) = wire::decode_input(&input, version) else {
        return SmartModuleTransformErrorStatus::DecodingBaseInput as i32;
    };
    drop(input);
    let mut output = SmartModuleOutput {
        successes: Vec::with_capacity(records.len()),
        error: None,
    };
    for mut record in records {
        match each(&record) {
            Ok(Out::Drop) => {}
            Ok(Out::Keep) => output.successes.push(record.into()),
            Ok(Out::Set(key, value)) => {
                record.key = key;
                record.value = value;
                output.successes.push(record.into());
            }
            Err(err) => {
                let record = record.into();
                let error = SmartModuleTransformRuntimeError::new(&record, base_offset, kind, err);
                output.error = Some(error);
                break;
            }
        }
    }
    let Ok(out) = wire::encode_output(&output, version) else {
        return SmartModuleTransformErrorStatus::EncodingOutput as i32;
    };
    // SAFETY: `out` stays allocated, unmoved, until the next call: the
    // engine reads it after this call returns.
    unsafe { copy_records(out.as_ptr() as i32, out.len() as i32) };
    let count = output.successes.len() as i32;
    *last_output() = out;
    count
}

fn last_output() -> std::sync::MutexGuard<'static, Vec<u8>> {
    // A panic aborts a SmartModule (panic = "abort"), so the lock cannot be
    // poisoned; take it back if it somehow were.
    LAST_OUTPUT.lock().unwrap_or_else(|e| e.into_inner())
}

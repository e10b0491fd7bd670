//! No Rust panic crosses into Python, and none prints to the user's stderr.
//!
//! Every failure the solver knows of is an error value; a panic would be a bug. Left
//! alone, it would reach Python as pyo3's `PanicException` (a `BaseException` that
//! `except Exception` misses) after Rust's default hook printed a message and, with
//! `RUST_BACKTRACE` set, a backtrace of some thirty lines. So the bindings run inside
//! [`guard`], which turns a panic into a RuntimeError naming it a bug, and a panic hook
//! keeps quiet about panics inside a guard or on a pool worker (both ours), recording
//! their location for the error message instead. Panics elsewhere keep the default hook.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

thread_local! {
    /// Guards entered and not yet left on this thread.
    static GUARDED: Cell<usize> = const { Cell::new(0) };
    /// The message and location of this thread's last quiet panic.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Install the quiet hook (once per process; later calls do nothing).
pub(crate) fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            let ours = GUARDED.with(Cell::get) > 0 || rayon::current_thread_index().is_some();
            if !ours {
                return default(info);
            }
            let place = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let text = format!("{}{place}", message(info.payload()));
            LAST.with(|last| *last.borrow_mut() = Some(text));
        }));
    });
}

/// A panic payload's message.
fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// What a caught panic was: the hook's record on this thread, else the payload's message
/// (a panic re-raised from another thread carries only its payload).
fn describe(payload: &(dyn Any + Send)) -> String {
    LAST.with(|last| last.borrow_mut().take())
        .filter(|text| text.starts_with(&message(payload)))
        .unwrap_or_else(|| message(payload))
}

/// The text of the RuntimeError that reports a panic.
pub(crate) fn internal_error(what: &str) -> String {
    format!(
        "matcher_rs internal error (a bug: please report it with the input that caused it): \
         {what}"
    )
}

/// Run `f`, turning a panic into `Err` with its description (for one item of a batch).
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| describe(&*payload))
}

/// Run a binding's body, turning a Rust panic into a RuntimeError that names it a bug.
///
/// Panics on rayon workers are re-raised on the calling thread, and `detach` re-takes the
/// GIL before unwinding further, so one guard around the whole body catches them all.
pub(crate) fn guard<R>(body: impl FnOnce() -> PyResult<R>) -> PyResult<R> {
    struct Entered;
    impl Drop for Entered {
        fn drop(&mut self) {
            GUARDED.with(|g| g.set(g.get() - 1));
        }
    }
    GUARDED.with(|g| g.set(g.get() + 1));
    let entered = Entered;
    let result = catch(body);
    drop(entered);
    result.unwrap_or_else(|what| Err(PyRuntimeError::new_err(internal_error(&what))))
}

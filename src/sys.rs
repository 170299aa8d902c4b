//! The platform seam: the few operating-system calls that no safe wrapper covers.
//!
//! Every `unsafe` block of the crate lives here, one function per operation, each with
//! the reason it is sound. Everything else uses std, `rustix` or `socket2`.

/// Registers `f` to run when the process exits (`exit`, or a return from `main`).
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: atexit only stores the function pointer; `f` is a plain `extern "C" fn`
    // with no arguments, which is exactly what it expects.
    unsafe {
        libc::atexit(f);
    }
}

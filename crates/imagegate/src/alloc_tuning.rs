//! glibc malloc settings for a process that streams large buffers.
//!
//! The HTTP client receives a GiB as a few thousand buffers of a few hundred
//! KiB. By default glibc serves allocations that size with a fresh `mmap`
//! (or grows and trims the heap around them), so every buffer costs page
//! faults and the kernel zeroing its pages: `perf` showed that as a fifth of
//! the receiving threads' time. Keeping such buffers in the heap, and not
//! trimming it after every free, lets freed buffers be reused instead. The
//! memory kept back is bounded by the trim threshold per arena.

/// Allocations below this size come from the heap, not from `mmap`.
const MMAP_THRESHOLD: i32 = 2 << 20;
/// Free memory at the top of a heap kept for reuse before it is returned.
const TRIM_THRESHOLD: i32 = 16 << 20;

/// Applies the settings; call once, early, before threads start allocating.
/// `IMAGEGATE_MALLOC_DEFAULTS=1` in the environment keeps glibc's defaults
/// (to compare, or if a deployment prefers them).
pub fn tune_for_streaming() {
    if std::env::var_os("IMAGEGATE_MALLOC_DEFAULTS").is_some_and(|v| v == "1") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

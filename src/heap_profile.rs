//! Opt-in heap profiling (`--features heap-profile`): dhat records every
//! allocation with its call stack, and the profile is written when the
//! operator is asked to stop (SIGTERM or Ctrl-C), before the caches are torn
//! down, so that its "end" is the operator as it was running. Without the
//! feature both functions do nothing.
//!
//! The profile goes to `$HEAP_PROFILE` (default `dhat-heap.json`).
//! `scripts/heap-profile.py` sums its live bytes by component, at the peak
//! and at the end; `make heap-profile` runs the bench at 10,000 with it.
//! dhat's allocator is the system one plus bookkeeping: read heap bytes from
//! the profile and RSS from a normal release build, never RSS from this one.

#[cfg(feature = "heap-profile")]
static PROFILER: std::sync::Mutex<Option<dhat::Profiler>> = std::sync::Mutex::new(None);

/// Starts recording (first thing in `main`).
pub fn start() {
    #[cfg(feature = "heap-profile")]
    {
        let file = std::env::var_os("HEAP_PROFILE").unwrap_or_else(|| "dhat-heap.json".into());
        // Deep enough to reach the type being decoded or the module that
        // holds it, which is what the aggregation attributes bytes by.
        let profiler = dhat::Profiler::builder()
            .file_name(file)
            .trim_backtraces(Some(48))
            .build();
        *PROFILER.lock().unwrap_or_else(|p| p.into_inner()) = Some(profiler);
    }
}

/// Writes the profile and stops recording; later calls do nothing.
pub fn finish() {
    #[cfg(feature = "heap-profile")]
    {
        let profiler = PROFILER.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(profiler);
    }
}

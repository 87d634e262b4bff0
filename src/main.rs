// jemalloc rather than the C library's allocator: the same allocator in the
// glibc build and the static musl image (musl's is slow under many threads),
// and one that gives freed pages back. With glibc's, the transient
// allocations of a cold start (10,000 exchanges, list pages) stayed resident
// as fragmented free space: 65 MiB resident for ~31 MiB of live heap.
#[cfg(not(feature = "heap-profile"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// A heap-profile build counts every allocation (see `heap_profile`); its
// RSS is not the release build's.
#[cfg(feature = "heap-profile")]
#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

/// jemalloc's options: a background thread returns dirty pages after 1 s
/// (the default 10 s kept burst memory resident for that long), and two
/// arenas instead of four per core (a controller's allocations are not
/// contended enough to need more).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2\0";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Test builds only: configures the fail points named in $FAILPOINTS
    // (see controller::reconcile::failpoints); without the `failpoints`
    // feature there are none to configure.
    let _failpoints = fail::FailScenario::setup();
    integration_operator::heap_profile::start();
    integration_operator::cli::Cli::from_env().execute().await
}

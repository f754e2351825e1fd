//! Any bytes into `decode_frame` and into a `FrameDecoder` fed in chunk splits: never a panic,
//! never a frame past the limit, never more buffered than one frame, and whatever decodes
//! re-encodes to the same bytes (`replication::fuzzing::frames`, shared with the proptest
//! suite). On top, this binary counts heap bytes to check that decoding allocates in proportion
//! to the bytes it was given, never to a length the bytes merely claim.

#![no_main]

use libfuzzer_sys::fuzz_target;
use replication::fuzzing::frames;
use replication::wire::{decode_frame, FRAME_HEADER_LEN};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting live bytes and their peak. libFuzzer's own allocations go
/// through C's malloc and are not counted; the target runs on one thread.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(live, Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the peak of `f`, above what was live before it.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    f();
    PEAK.load(Relaxed).saturating_sub(base)
}

fuzz_target!(|data: &[u8]| {
    let chunks = frames::chunk_plan(data);
    frames::check_stream(data, &chunks);
    for limit in frames::LIMITS {
        let peak = peak_during(|| drop(decode_frame(data, limit)));
        let visible = data.len().min(FRAME_HEADER_LEN + limit as usize);
        let bound = frames::allocation_bound(visible);
        assert!(
            peak <= bound,
            "decoding {} bytes under limit {limit} allocated {peak} bytes (bound {bound})",
            data.len()
        );
        // The decoder also keeps what it was pushed, up to every frame it returned.
        let peak = peak_during(|| drop(frames::decode_chunked(data, limit, &chunks)));
        let bound = frames::allocation_bound(data.len()) + 2 * data.len();
        assert!(
            peak <= bound,
            "a decoder fed {} bytes under limit {limit} allocated {peak} bytes (bound {bound})",
            data.len()
        );
    }
});

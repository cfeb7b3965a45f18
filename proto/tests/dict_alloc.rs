//! The dictionary look-ups the codec and JSON mapping make per AVP must not allocate: this
//! test binary counts heap allocations around them.

use dmproto::dict::Dictionary;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn lookups_do_not_allocate() {
    let d = Dictionary::builtin(); // built (and allocated) here, before counting
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut found = 0usize;
    for _ in 0..100 {
        found += usize::from(d.avp(263, 0).is_some());
        found += usize::from(d.avp(701, 10415).is_some());
        found += usize::from(d.avp(4_000_000, 1).is_some());
        found += usize::from(d.avp_by_name("Multiple-Services-Credit-Control").is_some());
        found += usize::from(d.avp_by_name("No-Such-AVP").is_some());
        found += usize::from(d.command(16777216, 305).is_some());
        found += usize::from(d.command(12345, 258).is_some());
        found += usize::from(d.command_by_abbr("ppr").is_some());
        found += usize::from(
            d.command_by_abbr("much-too-long-to-be-an-abbreviation")
                .is_some(),
        );
        found += usize::from(d.command_by_name("Push-Profile-Request").is_some());
        found += usize::from(d.application(16777251).is_some());
        found += usize::from(d.vendor(10415).is_some());
        found += usize::from(d.avp(450, 0).and_then(|a| a.enum_name(2)).is_some());
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(found, 100 * 10);
    assert_eq!(
        after - before,
        0,
        "look-ups allocated {} times",
        after - before
    );
}

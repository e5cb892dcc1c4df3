//! Runs the fuzz harnesses of `src/fuzz.rs` for many inputs and reports, per parser, the
//! inputs fed, the panics, the rate and the largest single allocation (an input can never
//! make a parser allocate without bound: inputs are at most 8 KiB).
//!
//! `cargo run --example fuzz -- [--cases N] [--seed S] [TARGET...]` (default 10,000,000 cases
//! per target, every target). Exit status 1 on any panic or an allocation over 1 MiB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use pastella_pool::fuzz;

/// The system allocator, remembering the largest single request.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// Any allocation above this while fuzzing is a bug (inputs are at most 8 KiB).
const ALLOCATION_BOUND: usize = 1 << 20;

fn main() {
    let mut cases: u64 = 10_000_000;
    let mut seed: u64 = 1;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cases" => cases = args.next().and_then(|v| v.parse().ok()).expect("--cases N"),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).expect("--seed S"),
            _ => names.push(arg),
        }
    }
    // Panics are counted and their inputs printed below; the default hook would print each.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    println!(
        "{:<14} {:>12} {:>7} {:>9} {:>12} {:>14}",
        "parser", "inputs", "panics", "seconds", "inputs/s", "largest alloc"
    );
    for target in fuzz::targets().into_iter().filter(|t| names.is_empty() || names.iter().any(|n| n == t.name)) {
        LARGEST.store(0, Ordering::Relaxed);
        let started = Instant::now();
        let report = fuzz::run(&target, cases, seed);
        let secs = started.elapsed().as_secs_f64();
        let largest = LARGEST.load(Ordering::Relaxed);
        println!(
            "{:<14} {:>12} {:>7} {:>9.1} {:>12.0} {:>14}",
            target.name,
            report.cases,
            report.panics,
            secs,
            report.cases as f64 / secs,
            largest
        );
        for input in &report.crashes {
            println!("  crash input (hex): {}", hex::encode(input));
        }
        failed |= report.panics > 0 || largest > ALLOCATION_BOUND;
    }
    std::process::exit(i32::from(failed));
}

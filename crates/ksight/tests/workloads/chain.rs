// SPDX-License-Identifier: MIT OR Apache-2.0
//! ksight profile tests: the hot path main -> outer -> middle -> leaf of chain.c, in Rust,
//! for SECONDS (argv[1]). Built by the test with rustc's release settings: no frame
//! pointers (the Rust default on x86_64, and the standard library is built without them).

use std::hint::black_box;
use std::time::{Duration, Instant};

#[inline(never)]
fn leaf(n: u64) -> u64 {
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(black_box(i.wrapping_mul(i)));
    }
    sum
}

#[inline(never)]
fn middle(n: u64) -> u64 {
    black_box(leaf(n)).wrapping_add(1)
}

#[inline(never)]
fn outer(n: u64) -> u64 {
    black_box(middle(n)).wrapping_add(1)
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3.0);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut sink = 0u64;
    // The tests wait for this line: main runs.
    println!("ready");
    while Instant::now() < end {
        sink = sink.wrapping_add(outer(200_000));
    }
    black_box(sink);
}

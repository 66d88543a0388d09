//! The profiler engine, below `ksight profile` (and the pprof endpoint to come): stack
//! counts and copies read from the kernel, unwinding, symbols and the pprof encoding.

pub mod collect;
pub mod copies;
pub mod isolated;
pub mod model;
pub mod pprof;
pub mod symbols;
pub mod unwind;

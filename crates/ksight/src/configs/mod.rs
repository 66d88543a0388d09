//! User-defined programs: ebpf_exporter's v2 configs (`<name>.yaml` beside `<name>.bpf.o`),
//! read strictly ([`schema`]) and turned into metric families from their maps ([`series`]),
//! their keys decoded by the decoder library (`decode::labels`).

pub mod collector;
pub mod maps;
pub mod schema;
pub mod sections;
pub mod series;

//! Kernel symbols from `/proc/kallsyms`, for the `ksym` and `kstack` decoders: an exact
//! address (a function a program recorded with `bpf_get_func_ip`, say) or the function an
//! address falls in (a stack frame).
//!
//! Written here rather than through blazesym (the profiler's symbolizer): the decoders need
//! ebpf_exporter's two lookups, exact and nearest-below, over one sorted table they can reload
//! when a module brings new symbols, and nothing of blazesym's file formats.

/// A sorted table of kernel symbols.
#[derive(Debug, Default)]
pub struct Kallsyms {
    /// (address, name), sorted by address; module symbols as `name [module]`.
    symbols: Vec<(u64, Box<str>)>,
}

impl Kallsyms {
    /// Parses the text of `/proc/kallsyms` (`ADDRESS TYPE NAME [MODULE]` per line). Lines
    /// that do not parse, and zero addresses (what an unprivileged reader sees), are left out.
    pub fn parse(text: &str) -> Kallsyms {
        let mut symbols: Vec<(u64, Box<str>)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let address = u64::from_str_radix(fields.next()?, 16).ok()?;
                let _kind = fields.next()?;
                let name = fields.next()?;
                let name = match fields.next() {
                    Some(module) => format!("{name} {module}"),
                    None => name.to_string(),
                };
                (address != 0).then(|| (address, name.into_boxed_str()))
            })
            .collect();
        symbols.sort_by_key(|(address, _)| *address);
        Kallsyms { symbols }
    }

    /// Reads `/proc/kallsyms`.
    pub fn read() -> std::io::Result<Kallsyms> {
        Ok(Kallsyms::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The address of the symbol `name` (of the kernel itself, not a module's); the last
    /// one listed when several share the name.
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.symbols
            .iter()
            .rev()
            .find(|(_, n)| &**n == name)
            .map(|(address, _)| *address)
    }

    /// The symbol that starts exactly at `address`.
    pub fn exact(&self, address: u64) -> Option<&str> {
        let i = self
            .symbols
            .binary_search_by_key(&address, |(a, _)| *a)
            .ok()?;
        Some(&self.symbols[i].1)
    }

    /// The symbol with the greatest start address not above `address`.
    pub fn containing(&self, address: u64) -> Option<&str> {
        let after = self.symbols.partition_point(|(a, _)| *a <= address);
        after.checked_sub(1).map(|i| &*self.symbols[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "ffffffff81000000 T _stext\n\
                        ffffffff81000830 t pipe_lock\n\
                        ffffffff81000870 T pipe_unlock\n\
                        ffffffffc0000000 t xfs_iget\t[xfs]\n\
                        0000000000000000 A fixed_percpu_data\n\
                        garbage\n";

    #[test]
    fn exact_and_containing() {
        let k = Kallsyms::parse(TEXT);
        assert_eq!(k.exact(0xffffffff81000830), Some("pipe_lock"));
        assert_eq!(k.exact(0xffffffff81000838), None);
        assert_eq!(k.containing(0xffffffff81000838), Some("pipe_lock"));
        assert_eq!(k.containing(0xffffffff81000870), Some("pipe_unlock"));
        assert_eq!(k.containing(0xffffffffc0000010), Some("xfs_iget [xfs]"));
        assert_eq!(k.containing(0x1000), None, "below the first symbol");
        assert_eq!(k.exact(0), None, "zero addresses are left out");
        assert_eq!(k.address_of("pipe_unlock"), Some(0xffffffff81000870));
        assert_eq!(
            k.address_of("xfs_iget"),
            None,
            "module symbols carry their module"
        );
    }

    #[test]
    fn unprivileged_text_is_empty() {
        assert!(Kallsyms::parse("0000000000000000 T _stext\n").is_empty());
    }
}

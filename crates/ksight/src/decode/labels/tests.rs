//! Every decoder against fixed lookups, and the chain rules.

use super::*;
use crate::decode::kallsyms::Kallsyms;
use crate::decode::pci::PciIds;

/// Fixed answers; counts kallsyms reloads.
#[derive(Default)]
struct Fixture {
    ifnames: HashMap<u32, String>,
    devices: HashMap<(u32, u32), String>,
    cgroups: HashMap<u64, String>,
    kallsyms: Kallsyms,
    /// What a reload of kallsyms reads.
    kallsyms_after_reload: Option<Kallsyms>,
    reloads: usize,
    pci: Option<PciIds>,
}

impl Lookup for Fixture {
    fn ifname(&mut self, index: u32) -> Option<String> {
        self.ifnames.get(&index).cloned()
    }
    fn block_device(&mut self, major: u32, minor: u32) -> Option<String> {
        self.devices.get(&(major, minor)).cloned()
    }
    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        self.cgroups.get(&id).cloned()
    }
    fn kallsyms(&mut self, reload: bool) -> &Kallsyms {
        if reload {
            self.reloads += 1;
            if let Some(fresh) = self.kallsyms_after_reload.take() {
                self.kallsyms = fresh;
            }
        }
        &self.kallsyms
    }
    fn pci(&mut self) -> Option<&PciIds> {
        self.pci.as_ref()
    }
}

fn decoder(yaml: &str) -> Decoder {
    let config: DecoderConfig = serde_norway::from_str(yaml).expect("decoder yaml");
    Decoder::new(&config).expect("valid decoder")
}

/// `input` through the one-decoder chain `yaml`, as a label value.
fn run(yaml: &str, input: &[u8], lookup: &mut Fixture) -> Result<Option<String>, DecodeError> {
    let value = decoder(yaml).apply(Value::Outside(input.to_vec()), lookup)?;
    Ok(value.map(Value::into_label))
}

fn one(yaml: &str, input: &[u8]) -> String {
    run(yaml, input, &mut Fixture::default())
        .expect("decodes")
        .expect("not skipped")
}

#[test]
fn uint_reads_host_order_widths() {
    assert_eq!(one("name: uint", &[7]), "7");
    assert_eq!(one("name: uint", &2u16.to_ne_bytes()), "2");
    assert_eq!(one("name: uint", &70000u32.to_ne_bytes()), "70000");
    assert_eq!(
        one("name: uint", &u64::MAX.to_ne_bytes()),
        "18446744073709551615"
    );
    let e = run("name: uint", &[1, 2, 3], &mut Fixture::default()).unwrap_err();
    assert_eq!(e.decoder, "uint");
    assert!(e.why.contains("not 3"), "{e}");
}

#[test]
fn hex_string_and_addresses() {
    assert_eq!(one("name: hex", &[0xde, 0xad, 0x0b]), "dead0b");
    assert_eq!(one("name: string", b"nginx\0junk after"), "nginx");
    assert_eq!(one("name: string", b"no nul"), "no nul");
    assert_eq!(one("name: inet_ip", &[10, 0, 0, 1]), "10.0.0.1");
    let v6: [u8; 16] = "2001:db8::8a2e:370:7334"
        .parse::<Ipv6Addr>()
        .unwrap()
        .octets();
    assert_eq!(one("name: inet_ip", &v6), "2001:db8::8a2e:370:7334");
    let mapped: [u8; 16] = Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped().octets();
    assert_eq!(one("name: inet_ip", &mapped), "192.0.2.9");
    assert!(run("name: inet_ip", &[1, 2, 3], &mut Fixture::default()).is_err());
}

#[test]
fn outside_bytes_are_escaped_by_the_one_rule() {
    assert_eq!(
        one("name: string", b"a\nb\x1b[2J\xff\0"),
        "a\\x0ab\\x1b[2J\\xff"
    );
}

#[test]
fn dns_names() {
    assert_eq!(one("name: dname", b""), ".");
    assert_eq!(
        one("name: dname", b"\x03www\x07example\x03org"),
        "www.example.org"
    );
    assert_eq!(
        one("name: dname", b"\x09short"),
        "\\x09short",
        "overrun: as it was"
    );
}

#[test]
fn interfaces_devices_and_cgroups() {
    let mut f = Fixture::default();
    f.ifnames.insert(3, "eth0".into());
    f.devices.insert((8, 16), "sdb".into());
    f.devices.insert((259, 0x12345), "nvme9n1".into());
    f.cgroups
        .insert(77, "/sys/fs/cgroup/system.slice/ssh.service".into());
    let dev = |major: u32, minor: u32| {
        ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)).to_ne_bytes()
    };
    let ok = |yaml: &str, input: &[u8], f: &mut Fixture| run(yaml, input, f).unwrap().unwrap();
    assert_eq!(ok("name: ifname", &3u32.to_ne_bytes(), &mut f), "eth0");
    assert_eq!(ok("name: ifname", &9u32.to_ne_bytes(), &mut f), "unknown:9");
    assert!(run("name: ifname", &[1, 0], &mut f).is_err(), "short input");
    assert_eq!(ok("name: majorminor", &dev(8, 16), &mut f), "sdb");
    assert_eq!(
        ok("name: majorminor", &dev(259, 0x12345), &mut f),
        "nvme9n1"
    );
    assert_eq!(
        ok("name: majorminor", &dev(136, 16), &mut f),
        "unknown:136:16"
    );
    assert_eq!(
        ok("name: cgroup", b"77", &mut f),
        "/sys/fs/cgroup/system.slice/ssh.service"
    );
    assert_eq!(ok("name: cgroup", b"78", &mut f), "unknown_cgroup_id:78");
    assert!(run("name: cgroup", b"seventy", &mut f).is_err());
}

#[test]
fn errnos_and_syscalls_by_this_architectures_tables() {
    assert_eq!(one("name: errno", b"1"), "EPERM");
    assert_eq!(one("name: errno", b"104"), "ECONNRESET");
    assert_eq!(one("name: errno", b"0"), "unknown:0");
    assert_eq!(one("name: errno", b"1000"), "unknown:1000");
    assert_eq!(
        one("name: syscall", b"0"),
        if cfg!(target_arch = "x86_64") {
            "read"
        } else {
            "io_setup"
        }
    );
    assert_eq!(
        one("name: syscall", b"-1"),
        "unknown_syscall:18446744073709551615"
    );
    assert_eq!(one("name: syscall", b"99999"), "unknown_syscall:99999");
}

#[test]
fn kernel_symbols_reload_once_on_a_miss() {
    let mut f = Fixture {
        kallsyms: Kallsyms::parse("1000 T one\n2000 T two\n"),
        kallsyms_after_reload: Some(Kallsyms::parse("800 T zero\n1000 T one\n2000 T two\n")),
        ..Default::default()
    };
    let ok = |yaml: &str, input: &[u8], f: &mut Fixture| run(yaml, input, f).unwrap().unwrap();
    assert_eq!(ok("name: ksym", &0x1000u64.to_ne_bytes(), &mut f), "one");
    assert_eq!(f.reloads, 0, "a hit reads nothing again");
    assert_eq!(
        ok("name: ksym", &0x1001u64.to_ne_bytes(), &mut f),
        "unknown_addr:0x1001"
    );
    assert_eq!(f.reloads, 1);
    let stack: Vec<u8> = [0x1004u64, 0x2fff, 0x900, 0, 0x1000]
        .iter()
        .flat_map(|a| a.to_ne_bytes())
        .collect();
    assert_eq!(
        ok("name: kstack", &stack, &mut f),
        "one\ntwo\nzero",
        "up to the first zero"
    );
    let below: Vec<u8> = [0x10u64, 0x2000]
        .iter()
        .flat_map(|a| a.to_ne_bytes())
        .collect();
    assert_eq!(ok("name: kstack", &below, &mut f), "??\ntwo");
    assert!(
        run("name: kstack", &[0; 12], &mut f).is_err(),
        "not whole addresses"
    );
}

#[test]
fn pci_names_or_what_is_missing() {
    let mut f = Fixture {
        pci: Some(PciIds::parse(crate::decode::pci::tests::SAMPLE)),
        ..Default::default()
    };
    let ok =
        |yaml: &str, input: &str, f: &mut Fixture| run(yaml, input.as_bytes(), f).unwrap().unwrap();
    assert_eq!(ok("name: pci_vendor", "32902", &mut f), "Intel Corporation");
    assert_eq!(ok("name: pci_vendor", "4096", &mut f), "Ver Mid");
    assert_eq!(
        ok("name: pci_vendor", "48879", &mut f),
        "unknown pci vendor: 0xbeef"
    );
    assert_eq!(
        ok("name: pci_device", &0x8086_1000u32.to_string(), &mut f),
        "82542 Gigabit Ethernet Controller (Fiber)"
    );
    assert_eq!(
        ok("name: pci_device", &0xdead_beefu32.to_string(), &mut f),
        "unknown pci device: 0xdeadbeef"
    );
    assert_eq!(ok("name: pci_class", "2", &mut f), "Network controller");
    assert_eq!(
        ok("name: pci_class", "253", &mut f),
        "unknown pci class: 0xfd"
    );
    assert_eq!(
        ok("name: pci_subclass", "512", &mut f),
        "Ethernet controller"
    );
    assert_eq!(
        ok("name: pci_subclass", "64768", &mut f),
        "unknown pci class: 0xfd"
    );
    assert_eq!(
        ok("name: pci_subclass", "267", &mut f),
        "unknown pci subclass: 0x0b (class 0x01)"
    );
    let mut none = Fixture::default();
    assert_eq!(
        ok("name: pci_vendor", "32902", &mut none),
        "missing pci.ids db"
    );
}

#[test]
fn regexp_keeps_a_group_or_the_match_or_skips() {
    let yaml = "{name: regexp, regexps: ['^systemd-journal$', '^(sshd)-session']}";
    assert_eq!(one(yaml, b"systemd-journal"), "systemd-journal");
    assert_eq!(one(yaml, b"sshd-session: root"), "sshd");
    assert_eq!(run(yaml, b"cron", &mut Fixture::default()).unwrap(), None);
    assert_eq!(
        one("{name: regexp, regexps: ['o+']}", b"foobar"),
        "oo",
        "unanchored"
    );
}

#[test]
fn static_map_with_and_without_unknowns() {
    let yaml = "{name: static_map, static_map: {1: read, 2: write, x: 'ex'}}";
    assert_eq!(one(yaml, b"1"), "read");
    assert_eq!(one(yaml, b"x"), "ex");
    assert_eq!(one(yaml, b"3"), "unknown:3");
    let lax = "{name: static_map, allow_unknown: true, static_map: {1: read}}";
    assert_eq!(one(lax, b"3"), "3");
}

#[test]
fn configuration_errors_are_said_at_load() {
    let error = |yaml: &str| {
        let config: DecoderConfig = serde_norway::from_str(yaml).expect("yaml");
        Decoder::new(&config).unwrap_err()
    };
    assert!(error("name: bananas").contains("unknown decoder \"bananas\""));
    assert!(error("name: regexp").contains("needs `regexps`"));
    assert!(error("{name: regexp, regexps: []}").contains("empty"));
    assert!(error("{name: regexp, regexps: ['(']}").contains("does not compile"));
    assert!(error("name: static_map").contains("needs `static_map`"));
    assert!(serde_norway::from_str::<DecoderConfig>("{name: uint, bogus: 1}").is_err());
    let labels = |yaml: &str| {
        let configs: Vec<LabelConfig> = serde_norway::from_str(yaml).expect("yaml");
        Labels::new(&configs).unwrap_err()
    };
    assert!(labels("[{name: a, size: 0, decoders: [{name: uint}]}]").contains("size is 0"));
    assert!(labels("[{name: a, size: 4}]").contains("no decoders"));
    assert!(labels("[{name: a, size: 4, decoders: [{name: nope}]}]").starts_with("label \"a\""));
}

fn labels(yaml: &str) -> Labels {
    let configs: Vec<LabelConfig> = serde_norway::from_str(yaml).expect("labels yaml");
    Labels::new(&configs).expect("valid labels")
}

#[test]
fn keys_are_cut_by_size_and_padding_and_chained() {
    let l = labels(
        "[{name: pid, size: 4, decoders: [{name: uint}]},
          {name: comm, size: 8, padding: 4, decoders: [{name: string}, {name: regexp, regexps: ['^(\\w+)']}]},
          {name: op, size: 1, padding: 7, decoders: [{name: uint}, {name: static_map, static_map: {0: read, 1: write}}]}]",
    );
    assert_eq!(l.key_size(), 4 + 8 + 4 + 1 + 7);
    assert_eq!(l.names().collect::<Vec<_>>(), ["pid", "comm", "op"]);
    let key = |comm: &[u8; 8], op: u8| -> Vec<u8> {
        let mut k = 42u32.to_ne_bytes().to_vec();
        k.extend_from_slice(comm);
        k.extend_from_slice(&[0xee; 4]); // padding: never read
        k.push(op);
        k.extend_from_slice(&[0xee; 7]);
        k
    };
    let mut f = Fixture::default();
    assert_eq!(
        l.decode(&key(b"kworker\0", 1), &mut f),
        Ok(Decoded::Labels(vec![
            "42".into(),
            "kworker".into(),
            "write".into()
        ]))
    );
    assert_eq!(l.decode(&key(b"-dash\0\0\0", 0), &mut f), Ok(Decoded::Skip));
    let short = l.decode(&[0; 5], &mut f).unwrap_err();
    assert!(short.why.contains("5 bytes"), "{short}");
    let bad = labels("[{name: n, size: 3, decoders: [{name: uint}]}]");
    let e = bad.decode(&[1, 2, 3], &mut f).unwrap_err();
    assert_eq!((e.label.as_str(), e.decoder), ("n", "uint"));
}

proptest::proptest! {
    /// Whatever the key holds, decoding answers (labels, a skip or a rejection) and never
    /// panics; every label value is printable.
    #[test]
    fn any_key_decodes_or_is_rejected(key in proptest::collection::vec(proptest::num::u8::ANY, 22)) {
        let l = labels(
            "[{name: a, size: 8, decoders: [{name: kstack}]},
              {name: b, size: 4, decoders: [{name: dname}, {name: regexp, regexps: ['.*']}]},
              {name: c, size: 4, decoders: [{name: string}, {name: cgroup}]},
              {name: d, size: 2, decoders: [{name: uint}, {name: errno}]},
              {name: e, size: 4, decoders: [{name: inet_ip}]}]",
        );
        match l.decode(&key, &mut Fixture::default()) {
            Ok(Decoded::Labels(values)) => {
                for v in values {
                    proptest::prop_assert!(!v.chars().any(|c| c.is_control() && c != '\n'), "{:?}", v);
                }
            }
            Ok(Decoded::Skip) | Err(_) => {}
        }
    }
}

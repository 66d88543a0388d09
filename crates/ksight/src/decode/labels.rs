//! Map keys → label values, the way ebpf_exporter's v2 configs describe them: a key is cut
//! into labels (`size` bytes each, then `padding` bytes nobody reads), and each label's bytes
//! go through its chain of decoders, the first reading the key's bytes, each next one the
//! previous one's output. Used by user-defined programs' configs, the probes and the net
//! collector alike.
//!
//! Where ebpf_exporter is lax, this is strict, and says so at load: an unknown decoder, a
//! `regexp` without patterns or with one that does not compile, a `static_map` without its
//! mapping, a label of size 0 or without decoders are configuration errors, not a failure at
//! the first scrape. A value a decoder rejects (a `uint` of 3 bytes, text that is no number)
//! is a [`DecodeError`]: the caller drops that sample and counts it. A `regexp` that matches
//! nothing drops the sample on purpose ([`Decoded::Skip`]), as in ebpf_exporter. Every value
//! that carries bytes from outside (strings from the kernel, cgroup and interface names, map
//! values from the config) is written by the one rule (`printable`).

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

use super::lookup::Lookup;
use super::{errno_name, printable, syscall_name};

/// A label as a config spells it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelConfig {
    pub name: String,
    pub size: usize,
    #[serde(default)]
    pub padding: usize,
    #[serde(default)]
    pub decoders: Vec<DecoderConfig>,
}

/// A decoder as a config spells it (ebpf_exporter's four keys).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    pub name: String,
    #[serde(default)]
    pub static_map: Option<serde_norway::Mapping>,
    #[serde(default)]
    pub regexps: Option<Vec<String>>,
    #[serde(default)]
    pub allow_unknown: bool,
}

/// The decoders, by the names configs use.
pub const DECODER_NAMES: [&str; 18] = [
    "cgroup",
    "dname",
    "errno",
    "hex",
    "ifname",
    "inet_ip",
    "kstack",
    "ksym",
    "majorminor",
    "pci_class",
    "pci_device",
    "pci_subclass",
    "pci_vendor",
    "regexp",
    "static_map",
    "string",
    "syscall",
    "uint",
];

/// One decoder of a chain, ready to run.
#[derive(Debug)]
pub enum Decoder {
    Cgroup,
    Dname,
    Errno,
    Hex,
    Ifname,
    InetIp,
    Kstack,
    Ksym,
    MajorMinor,
    PciClass,
    PciDevice,
    PciSubclass,
    PciVendor,
    /// Tried in order; the first that matches gives its first group, or its whole match.
    Regexp(Vec<regex::bytes::Regex>),
    StaticMap {
        map: HashMap<Vec<u8>, Vec<u8>>,
        allow_unknown: bool,
    },
    String,
    Syscall,
    Uint,
}

/// What a decoder hands on: bytes from outside (escaped when they become a label), or text
/// ksight made itself (a number, a table's name) that needs no escaping.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Outside(Vec<u8>),
    Own(String),
}

impl Value {
    fn bytes(&self) -> &[u8] {
        match self {
            Value::Outside(b) => b,
            Value::Own(s) => s.as_bytes(),
        }
    }

    fn into_label(self) -> String {
        match self {
            Value::Outside(b) => printable(&b),
            Value::Own(s) => s,
        }
    }
}

/// The outcome of a key that decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The label values, in the labels' order.
    Labels(Vec<String>),
    /// A `regexp` matched nothing: the sample is left out on purpose.
    Skip,
}

/// A value a decoder rejected: the sample is dropped and counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub label: String,
    pub decoder: &'static str,
    pub why: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "label {}, decoder {}: {}",
            self.label, self.decoder, self.why
        )
    }
}

impl std::error::Error for DecodeError {}

/// `why` as a decoder's rejection (the label is filled in by the chain).
fn reject(decoder: &'static str, why: impl Into<String>) -> DecodeError {
    DecodeError {
        label: String::new(),
        decoder,
        why: why.into(),
    }
}

impl Decoder {
    /// The decoder a config names, checked: what is wrong is said here, at load.
    pub fn new(config: &DecoderConfig) -> Result<Decoder, String> {
        Ok(match config.name.as_str() {
            "cgroup" => Decoder::Cgroup,
            "dname" => Decoder::Dname,
            "errno" => Decoder::Errno,
            "hex" => Decoder::Hex,
            "ifname" => Decoder::Ifname,
            "inet_ip" => Decoder::InetIp,
            "kstack" => Decoder::Kstack,
            "ksym" => Decoder::Ksym,
            "majorminor" => Decoder::MajorMinor,
            "pci_class" => Decoder::PciClass,
            "pci_device" => Decoder::PciDevice,
            "pci_subclass" => Decoder::PciSubclass,
            "pci_vendor" => Decoder::PciVendor,
            "regexp" => Decoder::Regexp(compile_regexps(config.regexps.as_deref())?),
            "static_map" => Decoder::StaticMap {
                map: static_map(config.static_map.as_ref())?,
                allow_unknown: config.allow_unknown,
            },
            "string" => Decoder::String,
            "syscall" => Decoder::Syscall,
            "uint" => Decoder::Uint,
            other => {
                return Err(format!(
                    "unknown decoder {:?} (known: {})",
                    printable(other.as_bytes()),
                    DECODER_NAMES.join(", ")
                ))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Decoder::Cgroup => "cgroup",
            Decoder::Dname => "dname",
            Decoder::Errno => "errno",
            Decoder::Hex => "hex",
            Decoder::Ifname => "ifname",
            Decoder::InetIp => "inet_ip",
            Decoder::Kstack => "kstack",
            Decoder::Ksym => "ksym",
            Decoder::MajorMinor => "majorminor",
            Decoder::PciClass => "pci_class",
            Decoder::PciDevice => "pci_device",
            Decoder::PciSubclass => "pci_subclass",
            Decoder::PciVendor => "pci_vendor",
            Decoder::Regexp(_) => "regexp",
            Decoder::StaticMap { .. } => "static_map",
            Decoder::String => "string",
            Decoder::Syscall => "syscall",
            Decoder::Uint => "uint",
        }
    }

    /// Runs on `input`: the next value, None for a sample to leave out (`regexp`), or why
    /// the value is rejected.
    fn apply(&self, input: Value, lookup: &mut dyn Lookup) -> Result<Option<Value>, DecodeError> {
        let name = self.name();
        let bytes = input.bytes();
        let value = match self {
            Decoder::Uint => Value::Own(uint(bytes).ok_or_else(|| {
                reject(
                    name,
                    format!("a uint is 1, 2, 4 or 8 bytes, not {}", bytes.len()),
                )
            })?),
            Decoder::Hex => Value::Own(bytes.iter().map(|b| format!("{b:02x}")).collect()),
            Decoder::String => Value::Outside(until_nul(bytes).to_vec()),
            Decoder::InetIp => Value::Own(inet_ip(bytes).ok_or_else(|| {
                reject(
                    name,
                    format!("an address is 4 or 16 bytes, not {}", bytes.len()),
                )
            })?),
            Decoder::Dname => Value::Outside(dname(bytes)),
            Decoder::Ifname => {
                let index = u32::from_ne_bytes(first_bytes(name, bytes)?);
                match lookup.ifname(index) {
                    Some(ifname) => Value::Outside(ifname.into_bytes()),
                    None => Value::Own(format!("unknown:{index}")),
                }
            }
            Decoder::MajorMinor => {
                let dev = u32::from_ne_bytes(first_bytes(name, bytes)?);
                let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00));
                match lookup.block_device(major, minor) {
                    Some(device) => Value::Outside(device.into_bytes()),
                    None => Value::Own(format!("unknown:{major}:{minor}")),
                }
            }
            Decoder::Ksym => {
                Value::Own(ksym(u64::from_ne_bytes(first_bytes(name, bytes)?), lookup))
            }
            Decoder::Kstack => Value::Own(kstack(bytes, lookup).map_err(|why| reject(name, why))?),
            Decoder::Cgroup => {
                let id = number(name, bytes)?;
                match lookup.cgroup_path(id) {
                    Some(path) => Value::Outside(path.into_bytes()),
                    None => Value::Own(format!("unknown_cgroup_id:{id}")),
                }
            }
            Decoder::Errno => {
                let n = number(name, bytes)?;
                let known = u32::try_from(n).ok().and_then(errno_name);
                Value::Own(known.map_or_else(|| format!("unknown:{n}"), str::to_string))
            }
            Decoder::Syscall => {
                let n = number(name, bytes)?;
                let known = u32::try_from(n).ok().and_then(syscall_name);
                Value::Own(known.map_or_else(|| format!("unknown_syscall:{n}"), str::to_string))
            }
            Decoder::PciVendor | Decoder::PciDevice | Decoder::PciClass | Decoder::PciSubclass => {
                self.pci(number(name, bytes)?, lookup)
            }
            Decoder::Regexp(patterns) => match first_match(patterns, bytes) {
                Some(matched) => Value::Outside(matched),
                None => return Ok(None),
            },
            Decoder::StaticMap { map, allow_unknown } => match map.get(bytes) {
                Some(mapped) => Value::Outside(mapped.clone()),
                None if *allow_unknown => input,
                None => Value::Outside([b"unknown:".as_slice(), bytes].concat()),
            },
        };
        Ok(Some(value))
    }

    /// The four PCI decoders: `n` is a vendor (`pci_vendor`), vendor << 16 | device
    /// (`pci_device`), a class (`pci_class`) or class << 8 | subclass (`pci_subclass`).
    fn pci(&self, n: u64, lookup: &mut dyn Lookup) -> Value {
        let Some(ids) = lookup.pci() else {
            return Value::Own("missing pci.ids db".to_string());
        };
        let named = |name: Option<&str>| name.map(|n| Value::Outside(n.as_bytes().to_vec()));
        let found = match self {
            Decoder::PciVendor => u16::try_from(n).ok().and_then(|v| named(ids.vendor(v))),
            Decoder::PciDevice => u32::try_from(n)
                .ok()
                .and_then(|n| named(ids.device((n >> 16) as u16, n as u16))),
            Decoder::PciClass => u8::try_from(n).ok().and_then(|c| named(ids.class(c))),
            _ => {
                let Ok(n) = u16::try_from(n) else {
                    return Value::Own(format!("unknown pci subclass: 0x{n:x}"));
                };
                let (class, subclass) = ((n >> 8) as u8, n as u8);
                if ids.class(class).is_none() {
                    return Value::Own(format!("unknown pci class: 0x{class:02x}"));
                }
                named(ids.subclass(class, subclass)).or_else(|| {
                    Some(Value::Own(format!(
                        "unknown pci subclass: 0x{subclass:02x} (class 0x{class:02x})"
                    )))
                })
            }
        };
        found.unwrap_or_else(|| {
            Value::Own(match self {
                Decoder::PciVendor => format!("unknown pci vendor: 0x{n:04x}"),
                Decoder::PciDevice => format!("unknown pci device: 0x{n:08x}"),
                _ => format!("unknown pci class: 0x{n:02x}"),
            })
        })
    }
}

fn compile_regexps(patterns: Option<&[String]>) -> Result<Vec<regex::bytes::Regex>, String> {
    let patterns = patterns.ok_or("regexp needs `regexps`, a list of patterns")?;
    if patterns.is_empty() {
        return Err("regexp's `regexps` is empty: every sample would be left out".to_string());
    }
    patterns
        .iter()
        .map(|p| {
            regex::bytes::Regex::new(p).map_err(|e| {
                let first = e.to_string().lines().last().unwrap_or_default().to_string();
                format!(
                    "regexp {:?} does not compile: {first}",
                    printable(p.as_bytes())
                )
            })
        })
        .collect()
}

/// A config's `static_map`: YAML scalars (numbers and booleans too: `1: read`) as text.
fn static_map(
    mapping: Option<&serde_norway::Mapping>,
) -> Result<HashMap<Vec<u8>, Vec<u8>>, String> {
    let mapping = mapping.ok_or("static_map needs `static_map`, a mapping of values to names")?;
    mapping
        .iter()
        .map(|(k, v)| Ok((scalar(k)?.into_bytes(), scalar(v)?.into_bytes())))
        .collect()
}

fn scalar(value: &serde_norway::Value) -> Result<String, String> {
    match value {
        serde_norway::Value::String(s) => Ok(s.clone()),
        serde_norway::Value::Number(n) => Ok(n.to_string()),
        serde_norway::Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("static_map entries are scalars, not {other:?}")),
    }
}

/// 1, 2, 4 or 8 bytes in host order, in decimal.
fn uint(bytes: &[u8]) -> Option<String> {
    Some(match *bytes {
        [a] => a.to_string(),
        [a, b] => u16::from_ne_bytes([a, b]).to_string(),
        [a, b, c, d] => u32::from_ne_bytes([a, b, c, d]).to_string(),
        _ => u64::from_ne_bytes(bytes.try_into().ok()?).to_string(),
    })
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == 0).next().unwrap_or_default()
}

/// 4 bytes as IPv4, 16 as IPv6 (RFC 5952 text; an IPv4-mapped address as IPv4).
fn inet_ip(bytes: &[u8]) -> Option<String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(Ipv4Addr::from(v4).to_string());
    }
    let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
    Some(match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    })
}

/// A DNS name in wire format (length-prefixed labels) as dotted text; a length that runs past
/// the end leaves the bytes as they are.
fn dname(bytes: &[u8]) -> Vec<u8> {
    if bytes.is_empty() {
        return b".".to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&len, tail)) = rest.split_first() {
        let Some((label, after)) = tail.split_at_checked(usize::from(len)) else {
            return bytes.to_vec();
        };
        out.push(b'.');
        out.extend_from_slice(label);
        rest = after;
    }
    out.remove(0);
    out
}

/// The first `N` bytes, or a rejection naming how many there were.
fn first_bytes<const N: usize>(
    decoder: &'static str,
    bytes: &[u8],
) -> Result<[u8; N], DecodeError> {
    bytes
        .get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| reject(decoder, format!("needs {N} bytes, has {}", bytes.len())))
}

/// Text that a number decoder reads (`uint`'s output, usually): decimal, or `-N` (a signed
/// key, as ebpf_exporter's `syscall` reads one) as its two's complement.
fn number(decoder: &'static str, bytes: &[u8]) -> Result<u64, DecodeError> {
    let text = std::str::from_utf8(bytes).unwrap_or_default().trim();
    text.parse::<u64>()
        .ok()
        .or_else(|| text.parse::<i64>().ok().map(|n| n as u64))
        .ok_or_else(|| reject(decoder, format!("{:?} is not a number", printable(bytes))))
}

fn ksym(address: u64, lookup: &mut dyn Lookup) -> String {
    if let Some(name) = lookup.kallsyms(false).exact(address) {
        return name.to_string();
    }
    match lookup.kallsyms(true).exact(address) {
        Some(name) => name.to_string(),
        None => format!("unknown_addr:0x{address:x}"),
    }
}

/// 8-byte addresses up to the first zero, each the function it falls in (`??` for none),
/// one per line.
fn kstack(bytes: &[u8], lookup: &mut dyn Lookup) -> Result<String, String> {
    if !bytes.len().is_multiple_of(8) {
        return Err(format!(
            "a stack is 8-byte addresses, not {} bytes",
            bytes.len()
        ));
    }
    let addresses: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .take_while(|&a| a != 0)
        .collect();
    let frames = |lookup: &mut dyn Lookup, reload: bool| {
        let table = lookup.kallsyms(reload);
        addresses
            .iter()
            .map(|&a| table.containing(a).map(str::to_string))
            .collect::<Vec<_>>()
    };
    let mut names = frames(lookup, false);
    if names.iter().any(Option::is_none) {
        names = frames(lookup, true);
    }
    let names: Vec<String> = names
        .into_iter()
        .map(|n| n.unwrap_or_else(|| "??".to_string()))
        .collect();
    Ok(names.join("\n"))
}

fn first_match(patterns: &[regex::bytes::Regex], bytes: &[u8]) -> Option<Vec<u8>> {
    patterns.iter().find_map(|re| {
        let caps = re.captures(bytes)?;
        let wanted = if re.captures_len() > 1 {
            caps.get(1)
        } else {
            caps.get(0)
        };
        Some(wanted.map(|m| m.as_bytes().to_vec()).unwrap_or_default())
    })
}

/// One label: where its bytes are and how they are decoded.
#[derive(Debug)]
pub struct Label {
    pub name: String,
    size: usize,
    padding: usize,
    chain: Vec<Decoder>,
}

/// A key's labels, in order.
#[derive(Debug)]
pub struct Labels {
    labels: Vec<Label>,
}

impl Labels {
    /// Checks the configs: each label has a size and at least one decoder, every decoder is
    /// known and complete. The caller checks [`Labels::key_size`] against its map.
    pub fn new(configs: &[LabelConfig]) -> Result<Labels, String> {
        let labels = configs
            .iter()
            .map(|c| {
                let named =
                    |why: String| format!("label {:?}: {why}", printable(c.name.as_bytes()));
                if c.size == 0 {
                    return Err(named("size is 0".to_string()));
                }
                if c.decoders.is_empty() {
                    return Err(named("no decoders".to_string()));
                }
                let chain = c
                    .decoders
                    .iter()
                    .map(Decoder::new)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(named)?;
                Ok(Label {
                    name: c.name.clone(),
                    size: c.size,
                    padding: c.padding,
                    chain,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Labels { labels })
    }

    /// The bytes the labels cover, paddings included: the key size they describe.
    pub fn key_size(&self) -> usize {
        self.labels.iter().map(|l| l.size + l.padding).sum()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().map(|l| l.name.as_str())
    }

    /// Decodes one key.
    pub fn decode(&self, key: &[u8], lookup: &mut dyn Lookup) -> Result<Decoded, DecodeError> {
        if key.len() != self.key_size() {
            return Err(DecodeError {
                label: String::new(),
                decoder: "",
                why: format!(
                    "the key is {} bytes, the labels {}",
                    key.len(),
                    self.key_size()
                ),
            });
        }
        let mut values = Vec::with_capacity(self.labels.len());
        let mut offset = 0;
        for label in &self.labels {
            let mut value = Value::Outside(key[offset..offset + label.size].to_vec());
            offset += label.size + label.padding;
            for decoder in &label.chain {
                value = match decoder.apply(value, lookup) {
                    Ok(Some(next)) => next,
                    Ok(None) => return Ok(Decoded::Skip),
                    Err(e) => {
                        return Err(DecodeError {
                            label: label.name.clone(),
                            ..e
                        })
                    }
                };
            }
            values.push(value.into_label());
        }
        Ok(Decoded::Labels(values))
    }
}

#[cfg(test)]
mod tests;

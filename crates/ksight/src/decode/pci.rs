//! PCI vendor, device, class and subclass names from the host's `pci.ids` (the pciutils
//! database), for the `pci_*` decoders.
//!
//! Written here: the crates that exist embed their own copy of the database at build time,
//! and the decoders must name what the host's own file says (a node's hwdata is what its
//! operators read with lspci).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where distributions put the database (Debian's pciutils, Red Hat's hwdata).
pub const PATHS: [&str; 2] = ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

/// The names the database gives.
#[derive(Debug, Default)]
pub struct PciIds {
    vendors: HashMap<u16, Box<str>>,
    devices: HashMap<(u16, u16), Box<str>>,
    classes: HashMap<u8, Box<str>>,
    subclasses: HashMap<(u8, u8), Box<str>>,
}

impl PciIds {
    /// The first database of [`PATHS`] that exists; None when none does. A file that exists
    /// but cannot be read is an error.
    pub fn load() -> std::io::Result<Option<(PathBuf, PciIds)>> {
        for path in PATHS.map(Path::new) {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    return Ok(Some((path.to_path_buf(), PciIds::parse(&text))));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Parses the database: `vvvv  Vendor`, then `\tdddd  Device` lines under it (deeper
    /// lines are subsystems: left out); `C cc  Class`, then `\tss  Subclass` (deeper: prog-if).
    /// Lines that do not parse are left out.
    pub fn parse(text: &str) -> PciIds {
        let mut ids = PciIds::default();
        let mut vendor: Option<u16> = None;
        let mut class: Option<u8> = None;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() || line.starts_with("\t\t") {
                continue;
            }
            if let Some(rest) = line.strip_prefix('\t') {
                let Some((id, name)) = id_and_name(rest) else {
                    continue;
                };
                match (vendor, class) {
                    (Some(v), _) => {
                        if let Ok(d) = u16::from_str_radix(id, 16) {
                            ids.devices.insert((v, d), name.into());
                        }
                    }
                    (None, Some(c)) => {
                        if let Ok(s) = u8::from_str_radix(id, 16) {
                            ids.subclasses.insert((c, s), name.into());
                        }
                    }
                    (None, None) => {}
                }
            } else if let Some(rest) = line.strip_prefix("C ") {
                vendor = None;
                class = id_and_name(rest).and_then(|(id, name)| {
                    let c = u8::from_str_radix(id, 16).ok()?;
                    ids.classes.insert(c, name.into());
                    Some(c)
                });
            } else {
                class = None;
                vendor = id_and_name(line).and_then(|(id, name)| {
                    let v = u16::from_str_radix(id, 16).ok()?;
                    ids.vendors.insert(v, name.into());
                    Some(v)
                });
            }
        }
        ids
    }

    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        self.vendors.get(&vendor).map(|n| &**n)
    }

    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        self.devices.get(&(vendor, device)).map(|n| &**n)
    }

    pub fn class(&self, class: u8) -> Option<&str> {
        self.classes.get(&class).map(|n| &**n)
    }

    pub fn subclass(&self, class: u8, subclass: u8) -> Option<&str> {
        self.subclasses.get(&(class, subclass)).map(|n| &**n)
    }
}

/// `1234  Name` (the id, two spaces, the name).
fn id_and_name(text: &str) -> Option<(&str, &str)> {
    let (id, name) = text.split_once("  ")?;
    Some((id.trim(), name.trim()))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A slice of the database's real layout.
    pub const SAMPLE: &str = "# comment\n\
        1000  Ver Mid\n\
        8086  Intel Corporation\n\
        \t1000  82542 Gigabit Ethernet Controller (Fiber)\n\
        \t\t0e11 b0df  NC6132 Gigabit Ethernet Adapter (1000-SX)\n\
        10de  NVIDIA Corporation\n\
        C 01  Mass storage controller\n\
        \t06  SATA controller\n\
        \t\t01  AHCI 1.0\n\
        C 02  Network controller\n\
        \t00  Ethernet controller\n";

    #[test]
    fn names_of_every_kind() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(ids.vendor(0x8086), Some("Intel Corporation"));
        assert_eq!(
            ids.vendor(0x1000),
            Some("Ver Mid"),
            "vendors below 0x1000 too"
        );
        assert_eq!(
            ids.device(0x8086, 0x1000),
            Some("82542 Gigabit Ethernet Controller (Fiber)")
        );
        assert_eq!(ids.device(0x10de, 0x1000), None);
        assert_eq!(ids.class(0x02), Some("Network controller"));
        assert_eq!(ids.subclass(0x02, 0x00), Some("Ethernet controller"));
        assert_eq!(ids.subclass(0x01, 0x06), Some("SATA controller"));
        assert_eq!(
            ids.subclass(0x01, 0x01),
            None,
            "prog-if lines are not subclasses"
        );
    }
}

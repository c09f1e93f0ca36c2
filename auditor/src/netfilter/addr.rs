//! IP prefixes as netfilter rules write them (`10.0.0.0/8`, `127.0.0.1/8`, `::1`, `1.2.3.4`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// The two address families a probe packet can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum IpFamily {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

impl IpFamily {
    pub const BOTH: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    pub fn of(addr: &IpAddr) -> IpFamily {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        }
    }

    fn bits(self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An address prefix. Host bits are cleared on parse, as the kernel does (`127.0.0.1/8` is
/// `127.0.0.0/8`), so two spellings of one prefix compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    network: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Builds a prefix, clearing host bits. `None` when the length exceeds the family's width.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        let family = IpFamily::of(&addr);
        if prefix > family.bits() {
            return None;
        }
        let network = from_bits(family, to_bits(&addr) & mask(family, prefix));
        Some(IpNet { network, prefix })
    }

    /// Parses `ADDR` or `ADDR/LEN`. A bare address is a host prefix.
    pub fn parse(text: &str) -> Option<IpNet> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let prefix = match len {
            Some(l) => {
                // iptables also accepts a dotted netmask (`/255.255.0.0`).
                if let Ok(n) = l.parse::<u8>() {
                    n
                } else {
                    let m: Ipv4Addr = l.parse().ok()?;
                    let bits = u32::from(m);
                    if bits.leading_ones() + bits.trailing_zeros() != 32 {
                        return None;
                    }
                    bits.leading_ones() as u8
                }
            }
            None => IpFamily::of(&addr).bits(),
        };
        IpNet::new(addr, prefix)
    }

    pub fn host(addr: IpAddr) -> IpNet {
        let prefix = IpFamily::of(&addr).bits();
        IpNet {
            network: addr,
            prefix,
        }
    }

    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.network)
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, addr: &IpAddr) -> bool {
        let family = self.family();
        IpFamily::of(addr) == family
            && to_bits(addr) & mask(family, self.prefix) == to_bits(&self.network)
    }

    /// The first address after the network address (the network address itself for /31, /32,
    /// /127 and /128).
    pub fn first_host(&self) -> IpAddr {
        let family = self.family();
        if self.prefix + 1 >= family.bits() {
            self.network
        } else {
            from_bits(family, to_bits(&self.network) + 1)
        }
    }

    /// The last address of the prefix.
    pub fn last(&self) -> IpAddr {
        let family = self.family();
        from_bits(
            family,
            to_bits(&self.network) | !mask(family, self.prefix) & full(family),
        )
    }

    /// The address just before the prefix, if any.
    pub fn before(&self) -> Option<IpAddr> {
        let bits = to_bits(&self.network);
        bits.checked_sub(1).map(|b| from_bits(self.family(), b))
    }

    /// The address just after the prefix, if any.
    pub fn after(&self) -> Option<IpAddr> {
        let family = self.family();
        let last = to_bits(&self.last());
        if last == full(family) {
            None
        } else {
            Some(from_bits(family, last + 1))
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn full(family: IpFamily) -> u128 {
    match family {
        IpFamily::V4 => u128::from(u32::MAX),
        IpFamily::V6 => u128::MAX,
    }
}

fn mask(family: IpFamily, prefix: u8) -> u128 {
    let width = u32::from(family.bits());
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        0
    } else {
        let host = width - prefix;
        // Shifting a u128 by 128 overflows; host < 128 here because prefix >= 1.
        (full(family) >> host) << host
    }
}

fn to_bits(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn from_bits(family: IpFamily, bits: u128) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from((bits & u128::from(u32::MAX)) as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_cleared() {
        let a = IpNet::parse("127.0.0.1/8").unwrap();
        assert_eq!(a.to_string(), "127.0.0.0/8");
        assert!(a.contains(&"127.9.9.9".parse().unwrap()));
        assert!(!a.contains(&"128.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bare_address_is_host() {
        let a = IpNet::parse("::1").unwrap();
        assert_eq!(a.prefix(), 128);
        assert!(a.contains(&"::1".parse().unwrap()));
        assert!(!a.contains(&"127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bounds() {
        let a = IpNet::parse("10.0.0.0/8").unwrap();
        assert_eq!(a.last().to_string(), "10.255.255.255");
        assert_eq!(a.before().unwrap().to_string(), "9.255.255.255");
        assert_eq!(a.after().unwrap().to_string(), "11.0.0.0");
        let all = IpNet::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(&"203.0.113.1".parse().unwrap()));
        assert_eq!(all.after(), None);
        assert_eq!(all.before(), None);
        let v6all = IpNet::parse("::/0").unwrap();
        assert!(v6all.contains(&"2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn netmask_form_and_errors() {
        assert_eq!(
            IpNet::parse("10.1.0.0/255.255.0.0").unwrap().to_string(),
            "10.1.0.0/16"
        );
        assert!(IpNet::parse("10.0.0.0/33").is_none());
        assert!(IpNet::parse("10.0.0.0/255.0.255.0").is_none());
        assert!(IpNet::parse("nonsense").is_none());
    }
}

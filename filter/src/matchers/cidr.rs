//! IP blocks (`ipBlocks`, `remoteIpBlocks`, `source.ip`, `destination.ip`).
//!
//! Blocks are merged into sorted, disjoint address ranges per family; a lookup is one binary
//! search, so thousands of blocks cost a handful of comparisons and little memory.

use std::net::IpAddr;

use crate::text::{quote, sort_by};

/// One entry of an IP-block list: a single address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    pub address: IpAddr,
    pub prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpBlockError {
    #[error("{} is not an IP address or CIDR block", quote(.0))]
    Invalid(String),
    #[error("{}: prefix length must be at most {max}", quote(.0), max = .1)]
    PrefixTooLong(String, u8),
}

impl IpBlock {
    #[inline(never)]
    pub fn parse(raw: &str) -> Result<Self, IpBlockError> {
        let invalid = || IpBlockError::Invalid(raw.to_string());
        let (addr_text, prefix_text) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let address: IpAddr = addr_text.parse().map_err(|_| invalid())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix_text {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid());
                }
                let len: u8 = p.parse().map_err(|_| invalid())?;
                if len > max {
                    return Err(IpBlockError::PrefixTooLong(raw.to_string(), max));
                }
                len
            }
        };
        Ok(Self {
            address,
            prefix_len,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let (lo, hi) = range_v4(u32::from(net), self.prefix_len);
                (lo..=hi).contains(&u32::from(ip))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let (lo, hi) = range_v6(u128::from(net), self.prefix_len);
                (lo..=hi).contains(&u128::from(ip))
            }
            _ => false,
        }
    }
}

fn range_v4(addr: u32, prefix_len: u8) -> (u32, u32) {
    let host_bits = 32 - u32::from(prefix_len.min(32));
    let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
    (addr & mask, (addr & mask) | !mask)
}

fn range_v6(addr: u128, prefix_len: u8) -> (u128, u128) {
    let host_bits = 128 - u32::from(prefix_len.min(128));
    let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
    (addr & mask, (addr & mask) | !mask)
}

fn merge<T: Ord + Copy>(mut ranges: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    sort_by(&mut ranges, |a, b| a < b);
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        if let Some(last) = merged.last_mut() {
            // Overlapping or adjacent ranges collapse into one.
            if next(last.1).is_none_or(|after| lo <= after) {
                if hi > last.1 {
                    last.1 = hi;
                }
                continue;
            }
        }
        merged.push((lo, hi));
    }
    merged
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let after = ranges.partition_point(|(lo, _)| *lo <= x);
    after > 0 && ranges.get(after - 1).is_some_and(|(_, hi)| x <= *hi)
}

/// A list of IP blocks, ORed.
#[derive(Debug, Clone, Default)]
pub struct CidrSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl CidrSet {
    #[inline(never)]
    pub fn new<'a>(blocks: impl IntoIterator<Item = &'a IpBlock>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for block in blocks {
            match block.address {
                IpAddr::V4(a) => v4.push(range_v4(u32::from(a), block.prefix_len)),
                IpAddr::V6(a) => v6.push(range_v6(u128::from(a), block.prefix_len)),
            }
        }
        Self {
            v4: merge(v4, |x| x.checked_add(1)),
            v6: merge(v6, |x| x.checked_add(1)),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(blocks: &[&str]) -> CidrSet {
        let parsed: Vec<IpBlock> = blocks.iter().map(|b| IpBlock::parse(b).unwrap()).collect();
        CidrSet::new(&parsed)
    }

    #[test]
    fn parses_blocks() {
        assert!(IpBlock::parse("10.0.0.0/8").is_ok());
        assert!(IpBlock::parse("1.2.3.4").is_ok());
        assert!(IpBlock::parse("2001:db8::/32").is_ok());
        assert!(matches!(
            IpBlock::parse("10.0.0.0/33"),
            Err(IpBlockError::PrefixTooLong(..))
        ));
        assert!(matches!(
            IpBlock::parse("::/129"),
            Err(IpBlockError::PrefixTooLong(..))
        ));
        for bad in [
            "10.0.0.300",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "abc",
            "",
            "10.0.0.0/8/8",
            "010.0.0.1",
        ] {
            assert!(IpBlock::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lookups() {
        let s = set(&["10.0.0.0/8", "192.168.1.7", "10.1.0.0/16", "0.0.0.0/0"]);
        assert!(s.contains("8.8.8.8".parse().unwrap()));
        let s = set(&["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]);
        assert!(s.contains("10.255.255.255".parse().unwrap()));
        assert!(!s.contains("11.0.0.0".parse().unwrap()));
        assert!(s.contains("192.168.1.7".parse().unwrap()));
        assert!(!s.contains("192.168.1.8".parse().unwrap()));
        assert!(s.contains("2001:db8::42".parse().unwrap()));
        assert!(!s.contains("2001:db9::".parse().unwrap()));
        assert!(set(&["::/0"]).contains("::1".parse().unwrap()));
        assert!(!set(&["::/0"]).contains("1.1.1.1".parse().unwrap()));
    }

    #[test]
    fn host_bits_are_masked() {
        assert!(set(&["10.1.2.3/8"]).contains("10.200.0.1".parse().unwrap()));
    }
}

//! [`AddressPool`]: the loopback addresses the local compute hands out, one per server, so that every engine
//! listens on its standard port as it would on a VM of its own.

use std::net::Ipv4Addr;

use trove_core::{Error, Result};

/// A block of addresses inside 127.0.0.0/8, written `A.B.C.D/N` (N from 8 to 32).
///
/// Usable addresses are those of the block except 127.0.0.1 (the host's own servers listen there) and those
/// ending in `.0` or `.255` (they read as network and broadcast addresses to people and tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    base: u32,
    len: u64,
    prefix: u8,
}

impl AddressPool {
    /// Parses `A.B.C.D/N`; anything else (outside 127.0.0.0/8, host bits set, no usable address) is a 400 that
    /// says what is accepted.
    pub fn parse(text: &str) -> Result<AddressPool> {
        let bad = |why: &str| {
            Error::bad_request(format!(
                "Address pool '{}' {why}; give a block of 127.0.0.0/8 as A.B.C.D/N, e.g. 127.77.0.0/16.",
                text.escape_default()
            ))
        };
        let (addr, prefix) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| bad("has no prefix length"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=32).contains(p))
            .ok_or_else(|| bad("needs a prefix length from 8 to 32"))?;
        if addr.octets()[0] != 127 {
            return Err(bad("is not inside 127.0.0.0/8"));
        }
        let base = u32::from(addr);
        let len = 1u64 << (32 - u32::from(prefix));
        let mask = if prefix == 32 {
            u32::MAX
        } else {
            !((len as u32) - 1)
        };
        if base & mask != base {
            return Err(bad("has host bits set"));
        }
        let pool = AddressPool { base, len, prefix };
        if pool.first_usable().is_none() {
            return Err(bad(
                "has no usable address (127.0.0.1 and .0/.255 addresses are never handed out)",
            ));
        }
        Ok(pool)
    }

    fn usable(a: Ipv4Addr) -> bool {
        let last = a.octets()[3];
        a != Ipv4Addr::LOCALHOST && last != 0 && last != 255
    }

    fn at(&self, i: u64) -> Ipv4Addr {
        Ipv4Addr::from(self.base.wrapping_add(i as u32))
    }

    /// The first usable address (the one probed at start-up).
    pub fn first_usable(&self) -> Option<Ipv4Addr> {
        (0..self.len).map(|i| self.at(i)).find(|a| Self::usable(*a))
    }

    /// Whether `addr` is one of the pool's usable addresses.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let a = u64::from(u32::from(addr));
        let b = u64::from(self.base);
        a >= b && a < b + self.len && Self::usable(addr)
    }

    /// Every usable address once, starting at a point derived from `seed` (an instance id), so that control
    /// planes sharing a machine rarely try the same address at the same time.
    pub fn candidates(&self, seed: u128) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let start = (seed % u128::from(self.len)) as u64;
        (0..self.len)
            .map(move |i| self.at((start + i) % self.len))
            .filter(|a| Self::usable(*a))
    }
}

impl std::fmt::Display for AddressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks_of_loopback_and_refuses_the_rest() {
        let p = AddressPool::parse("127.77.0.0/16").expect("pool");
        assert_eq!(p.to_string(), "127.77.0.0/16");
        assert_eq!(p.first_usable(), Some(Ipv4Addr::new(127, 77, 0, 1)));
        for bad in [
            "127.77.0.0",
            "10.0.0.0/8",
            "127.77.0.1/16",
            "127.0.0.0/7",
            "127.0.0.0/33",
            "127.0.0.1/32",
            "127.0.0.0/32",
            "x/16",
        ] {
            let e = AddressPool::parse(bad).expect_err(bad);
            assert_eq!(e.fault().status, 400, "{bad}");
            assert!(e.to_string().contains("127.0.0.0/8"), "{bad}: {e}");
        }
        assert!(AddressPool::parse("127.9.9.9/32").is_ok());
    }

    #[test]
    fn never_hands_out_localhost_network_or_broadcast_addresses() {
        let p = AddressPool::parse("127.0.0.0/8").expect("pool");
        assert_eq!(p.first_usable(), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert!(!p.contains(Ipv4Addr::LOCALHOST));
        let small = AddressPool::parse("127.0.0.0/24").expect("pool");
        let all: Vec<Ipv4Addr> = small.candidates(7).collect();
        assert_eq!(all.len(), 253, "256 minus .0, .1 and .255");
        assert_eq!(all[0], Ipv4Addr::new(127, 0, 0, 7));
        assert!(all.iter().all(|a| small.contains(*a)));
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "each address once");
        assert!(!all.contains(&Ipv4Addr::LOCALHOST));
        assert!(!all.contains(&Ipv4Addr::new(127, 0, 0, 255)));
        assert!(!all.contains(&Ipv4Addr::new(127, 0, 0, 0)));
    }
}

//! Networks: a port's destinations as address prefixes, and the bounds a learned network
//! keeps to.

use std::net::IpAddr;

/// The shortest prefix a learned network may have: a /16 of IPv4 (a provider's region
/// block), a /48 of IPv6 (one site).
const IPV4_BOUND: u8 = 16;
const IPV6_BOUND: u8 = 48;

/// The prefix a learned network starts at: one /24 of IPv4, one /64 of IPv6.
const IPV4_START: u8 = 24;
const IPV6_START: u8 = 64;

/// One network a port's destinations fall in: an address with its prefix length (an
/// exact address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    pub base: IpAddr,
    pub prefix: u8,
}

pub(super) fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

impl Net {
    pub(super) fn full(addr: IpAddr) -> Net {
        Net {
            base: addr,
            prefix: bits(addr).1,
        }
    }

    /// `52.216.8.0/23`, `10.0.0.1`, `2001:db8::/64`.
    pub fn parse(s: &str) -> Option<Net> {
        match s.split_once('/') {
            Some((a, p)) => {
                let base: IpAddr = a.parse().ok()?;
                let prefix: u8 = p.parse().ok()?;
                (prefix <= bits(base).1).then_some(Net {
                    base: mask(base, prefix),
                    prefix,
                })
            }
            None => s.parse().ok().map(Net::full),
        }
    }

    pub(super) fn is_exact(self) -> bool {
        self.prefix == bits(self.base).1
    }

    pub(super) fn contains(self, other: Net) -> bool {
        self.base.is_ipv4() == other.base.is_ipv4()
            && other.prefix >= self.prefix
            && mask(other.base, self.prefix) == self.base
    }

    pub(super) fn bound(self) -> u8 {
        if self.base.is_ipv4() {
            IPV4_BOUND
        } else {
            IPV6_BOUND
        }
    }

    pub(super) fn start(self) -> u8 {
        if self.base.is_ipv4() {
            IPV4_START
        } else {
            IPV6_START
        }
    }

    pub(super) fn is_public(self) -> bool {
        crate::observe::is_public(&self.base.to_string())
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_exact() {
            write!(f, "{}", self.base)
        } else {
            write!(f, "{}/{}", self.base, self.prefix)
        }
    }
}

/// The network a learned one would be for `net` and the `members` beside it: a /24
/// (IPv6 /64), or as wide as they spread, never wider than the bound.
pub(super) fn covering(net: Net, members: &[Net]) -> Net {
    let mut prefix = net.start().min(net.prefix);
    for m in members {
        prefix = prefix.min(m.prefix).min(common_bits(m.base, net.base));
    }
    let prefix = prefix.max(net.bound());
    Net {
        base: mask(net.base, prefix),
        prefix,
    }
}

/// The common prefix length of two addresses of one family.
fn common_bits(a: IpAddr, b: IpAddr) -> u8 {
    let ((x, width), (y, _)) = (bits(a), bits(b));
    let shift = 128 - u32::from(width);
    let diff = (x << shift) ^ (y << shift);
    (diff.leading_zeros().min(u32::from(width))) as u8
}

/// A network key's parts: `connect tcp 52.216.8.0/23:443` → (`connect tcp`, net, `443`).
pub fn split_network_key(key: &str) -> Option<(&str, Net, &str)> {
    let (rest, port) = key.rsplit_once(':')?;
    let (head, dest) = rest.rsplit_once(' ')?;
    Some((head, Net::parse(dest)?, port))
}

//! The SSRF guard for webhook endpoint URLs: a workspace chooses the URL, Parley's servers call
//! it, so a URL must not lead into the network Parley runs in (loopback, private ranges, the
//! cloud metadata address, …). [`check_syntax`] runs when an endpoint is registered;
//! [`resolve_and_check`] runs before each delivery and returns the only addresses the deliverer
//! may connect to. Operators can open chosen ranges with [`UrlPolicy::allow`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use url::{Host, Url};

/// The longest endpoint URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Which addresses, beyond the public internet, webhook endpoints may reach.
///
/// The default allows nothing extra. An operator who runs receivers on the same machine or network
/// (tests, an internal bus) lists their ranges in `allow`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    pub allow: Vec<Cidr>,
}

impl UrlPolicy {
    pub fn new(allow: Vec<Cidr>) -> Self {
        UrlPolicy { allow }
    }

    /// Whether an endpoint may be reached at `ip`: it is public, or it lies in the allow-list.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.refusal(ip).is_none()
    }

    /// The class of a non-public address that the allow-list does not open.
    pub fn refusal(&self, ip: IpAddr) -> Option<AddressClass> {
        let class = classify(ip)?;
        // An IPv4-mapped IPv6 address reaches the same host as its IPv4 form.
        let canonical = ip.to_canonical();
        if self.allow.iter().any(|cidr| cidr.contains(ip) || cidr.contains(canonical)) { None } else { Some(class) }
    }
}

/// Why an endpoint URL is refused. [`UrlRefused::code`] is stable for the API; the `Display` text
/// is the human detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    /// The URL itself is unusable: not a URL, wrong scheme, no host, credentials, too long.
    #[error("{0}")]
    Invalid(String),
    /// The host is, or resolves to, an address that is not public and not allowed.
    #[error("{}", not_allowed_detail(.name.as_deref(), *.addr, *.class))]
    NotAllowed {
        /// The host name that resolved to `addr`; `None` when the URL holds the address itself.
        name: Option<String>,
        addr: IpAddr,
        class: AddressClass,
    },
    /// The host name has no address (or the resolver failed).
    #[error("{host} could not be resolved: {reason}")]
    Unresolvable { host: String, reason: String },
}

impl UrlRefused {
    /// The stable machine code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            UrlRefused::Invalid(_) => "webhook_url_invalid",
            UrlRefused::NotAllowed { .. } => "webhook_url_not_allowed",
            UrlRefused::Unresolvable { .. } => "webhook_url_unresolvable",
        }
    }
}

fn not_allowed_detail(name: Option<&str>, addr: IpAddr, class: AddressClass) -> String {
    let mut detail = match name {
        Some(name) => format!("{name} resolves to {addr}, which is "),
        None => format!("{addr} is "),
    };
    if let IpAddr::V6(v6) = addr
        && let Some((form, v4)) = embedded_ipv4(v6)
    {
        detail.push_str(&format!("the {form} form of {v4}, "));
    }
    detail.push_str(&class.to_string());
    if is_cloud_metadata(addr) {
        detail.push_str(" (cloud metadata)");
    }
    detail
}

/// The instance metadata services of the big clouds (AWS, GCP, Azure, …; AWS's IPv6 one too).
fn is_cloud_metadata(addr: IpAddr) -> bool {
    let addr = match addr {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(addr, |(_, v4)| IpAddr::V4(v4)),
        v4 => v4,
    };
    addr == IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))
        || addr == IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254))
}

/// Check an endpoint URL as written, without resolving it: `http` or `https`, a host, no
/// `user:password@`, at most [`MAX_URL_LEN`] bytes. IP literals in any form the URL standard
/// reads (`http://2130706433/`, `http://0x7f.1/`) come back as addresses, ready for
/// [`resolve_and_check`].
pub fn check_syntax(url: &str) -> Result<Url, UrlRefused> {
    if url.len() > MAX_URL_LEN {
        return Err(too_long());
    }
    let parsed = Url::parse(url).map_err(|e| UrlRefused::Invalid(format!("the URL is not valid: {e}")))?;
    check_parsed(&parsed)?;
    // Percent-encoding and punycode can make the stored form longer than the input.
    if parsed.as_str().len() > MAX_URL_LEN {
        return Err(too_long());
    }
    Ok(parsed)
}

fn too_long() -> UrlRefused {
    UrlRefused::Invalid(format!("the URL is longer than {MAX_URL_LEN} characters"))
}

fn check_parsed(url: &Url) -> Result<(), UrlRefused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlRefused::Invalid(format!("the URL must use https or http, not {}", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlRefused::Invalid("the URL must name a host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefused::Invalid("the URL must not contain a user name or password".into()));
    }
    Ok(())
}

/// Resolve the URL's host and refuse it if ANY of its addresses is not public (see [`classify`])
/// and not in the policy's allow-list. IP literals are used as they are, without DNS.
///
/// The deliverer must connect to the returned addresses (port included) and to nothing else,
/// keeping the URL's host for the `Host` header and TLS: resolving the name again at connection
/// time would let a DNS answer change between this check and the connection (DNS rebinding).
/// The lookup is the system resolver's; the caller bounds how long it may take.
pub async fn resolve_and_check(policy: &UrlPolicy, url: &Url) -> Result<Vec<SocketAddr>, UrlRefused> {
    check_parsed(url)?;
    let port = url.port_or_known_default().ok_or_else(|| UrlRefused::Invalid("the URL has no port".into()))?;
    let (name, addrs) = match url.host() {
        Some(Host::Ipv4(ip)) => (None, vec![SocketAddr::new(IpAddr::V4(ip), port)]),
        Some(Host::Ipv6(ip)) => (None, vec![SocketAddr::new(IpAddr::V6(ip), port)]),
        Some(Host::Domain(name)) => {
            let found = tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| UrlRefused::Unresolvable { host: name.to_owned(), reason: e.to_string() })?;
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for addr in found {
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
            (Some(name.to_owned()), addrs)
        }
        None => return Err(UrlRefused::Invalid("the URL must name a host".into())),
    };
    if addrs.is_empty() {
        let host = name.unwrap_or_default();
        return Err(UrlRefused::Unresolvable { host, reason: "no addresses".into() });
    }
    for addr in &addrs {
        if let Some(class) = policy.refusal(addr.ip()) {
            return Err(UrlRefused::NotAllowed { name, addr: addr.ip(), class });
        }
    }
    Ok(addrs)
}

/// Why an address is not public.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16.
    Private,
    /// 169.254.0.0/16 (with the cloud metadata address), fe80::/10.
    LinkLocal,
    /// fc00::/7.
    UniqueLocal,
    /// fec0::/10, deprecated but still routed by some networks.
    SiteLocal,
    /// 100.64.0.0/10, carrier-grade NAT.
    SharedAddressSpace,
    /// 255.255.255.255.
    Broadcast,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32.
    Documentation,
    /// 198.18.0.0/15, 2001:2::/48.
    Benchmarking,
    /// 240.0.0.0/4, 192.0.0.0/24 (IETF protocol assignments), 100::/64 (discard).
    Reserved,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Unspecified => "an unspecified address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::UniqueLocal => "a unique local address",
            AddressClass::SiteLocal => "a site-local address",
            AddressClass::SharedAddressSpace => "a carrier-grade NAT address",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Documentation => "a documentation address",
            AddressClass::Benchmarking => "a benchmarking address",
            AddressClass::Reserved => "a reserved address",
        })
    }
}

const V4_RANGES: &[(Ipv4Addr, u8, AddressClass)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, AddressClass::Unspecified),
    (Ipv4Addr::new(10, 0, 0, 0), 8, AddressClass::Private),
    (Ipv4Addr::new(100, 64, 0, 0), 10, AddressClass::SharedAddressSpace),
    (Ipv4Addr::new(127, 0, 0, 0), 8, AddressClass::Loopback),
    (Ipv4Addr::new(169, 254, 0, 0), 16, AddressClass::LinkLocal),
    (Ipv4Addr::new(172, 16, 0, 0), 12, AddressClass::Private),
    (Ipv4Addr::new(192, 0, 0, 0), 24, AddressClass::Reserved),
    (Ipv4Addr::new(192, 0, 2, 0), 24, AddressClass::Documentation),
    (Ipv4Addr::new(192, 168, 0, 0), 16, AddressClass::Private),
    (Ipv4Addr::new(198, 18, 0, 0), 15, AddressClass::Benchmarking),
    (Ipv4Addr::new(198, 51, 100, 0), 24, AddressClass::Documentation),
    (Ipv4Addr::new(203, 0, 113, 0), 24, AddressClass::Documentation),
    (Ipv4Addr::new(224, 0, 0, 0), 4, AddressClass::Multicast),
    // Before 240.0.0.0/4, which holds it.
    (Ipv4Addr::new(255, 255, 255, 255), 32, AddressClass::Broadcast),
    (Ipv4Addr::new(240, 0, 0, 0), 4, AddressClass::Reserved),
];

const V6_RANGES: &[(Ipv6Addr, u8, AddressClass)] = &[
    (Ipv6Addr::new(0x0100, 0, 0, 0, 0, 0, 0, 0), 64, AddressClass::Reserved),
    (Ipv6Addr::new(0x2001, 0x0002, 0, 0, 0, 0, 0, 0), 48, AddressClass::Benchmarking),
    (Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0), 32, AddressClass::Documentation),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, AddressClass::UniqueLocal),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, AddressClass::LinkLocal),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, AddressClass::SiteLocal),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, AddressClass::Multicast),
];

/// The class of an address that is not public, or `None` for a public one.
///
/// IPv6 addresses that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) are judged by the IPv4 address they lead to.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some(AddressClass::Unspecified)
            } else if v6.is_loopback() {
                Some(AddressClass::Loopback)
            } else if let Some((_, v4)) = embedded_ipv4(v6) {
                classify_v4(v4)
            } else {
                let bits = v6.to_bits();
                V6_RANGES.iter().find(|(net, prefix, _)| bits & mask_v6(*prefix) == net.to_bits()).map(|r| r.2)
            }
        }
    }
}

fn classify_v4(v4: Ipv4Addr) -> Option<AddressClass> {
    let bits = v4.to_bits();
    V4_RANGES.iter().find(|(net, prefix, _)| bits & mask_v4(*prefix) == net.to_bits()).map(|r| r.2)
}

/// The IPv4 address an IPv6 address stands for, with the name of the form. `::` and `::1` are
/// not IPv4-compatible forms: they are IPv6's own unspecified and loopback addresses.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<(&'static str, Ipv4Addr)> {
    let s = v6.segments();
    let v4 = Ipv4Addr::from_bits(v6.to_bits() as u32);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(("IPv4-mapped", v4)),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(("NAT64", v4)),
        [0, 0, 0, 0, 0, 0, _, _] if !v6.is_unspecified() && !v6.is_loopback() => Some(("IPv4-compatible", v4)),
        _ => None,
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0)
}

/// A block of addresses, `10.0.0.0/8` or `::1/128`; a bare address is a block of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or a CIDR block such as 10.0.0.0/8 or ::1/128")]
    Invalid(String),
    #[error("{input:?}: the prefix length of an {family} block is at most {max}")]
    PrefixTooLong { input: String, family: &'static str, max: u8 },
    #[error("{input:?} has address bits set after the prefix; did you mean {suggestion}?")]
    HostBitsSet { input: String, suggestion: String },
}

impl Cidr {
    /// The block of `prefix` leading bits of `network`; bits after the prefix must be zero.
    pub fn new(network: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let input = || format!("{network}/{prefix}");
        let (max, family) = if network.is_ipv4() { (32, "IPv4") } else { (128, "IPv6") };
        if prefix > max {
            return Err(CidrError::PrefixTooLong { input: input(), family, max });
        }
        let masked = match network {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & mask_v4(prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & mask_v6(prefix))),
        };
        if masked != network {
            return Err(CidrError::HostBitsSet { input: input(), suggestion: format!("{masked}/{prefix}") });
        }
        Ok(Cidr { network, prefix })
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in the block. An IPv4 block holds no IPv6 address and the reverse.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => ip.to_bits() & mask_v4(self.prefix) == net.to_bits(),
            (IpAddr::V6(net), IpAddr::V6(ip)) => ip.to_bits() & mask_v6(self.prefix) == net.to_bits(),
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let s = s.trim();
        let invalid = || CidrError::Invalid(s.chars().take(64).collect());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| invalid())?;
        let (max, family) = if network.is_ipv4() { (32u8, "IPv4") } else { (128u8, "IPv6") };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                match u8::try_from(p.parse::<u64>().unwrap_or(u64::MAX)).ok().filter(|p| *p <= max) {
                    Some(p) => p,
                    None => return Err(CidrError::PrefixTooLong { input: s.into(), family, max }),
                }
            }
            Some(_) => return Err(invalid()),
        };
        Cidr::new(network, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both steps, as registration followed by a delivery would run them.
    async fn check(policy: &UrlPolicy, url: &str) -> Result<Vec<SocketAddr>, UrlRefused> {
        let url = check_syntax(url)?;
        resolve_and_check(policy, &url).await
    }

    async fn refused(url: &str) -> UrlRefused {
        match check(&UrlPolicy::default(), url).await {
            Ok(addrs) => panic!("{url} was accepted: {addrs:?}"),
            Err(refused) => refused,
        }
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn refuses_loopback_private_and_metadata_literals() {
        let cases = [
            ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
            ("http://10.0.0.1/", "10.0.0.1 is a private address"),
            ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address (cloud metadata)"),
            ("http://[::1]:8080/", "::1 is a loopback address"),
            ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1 is the IPv4-mapped form of 127.0.0.1, a loopback address"),
            (
                "http://[64:ff9b::a9fe:a9fe]/",
                "64:ff9b::a9fe:a9fe is the NAT64 form of 169.254.169.254, a link-local address (cloud metadata)",
            ),
            ("http://[fd00:ec2::254]/", "fd00:ec2::254 is a unique local address (cloud metadata)"),
            ("https://192.168.1.1:8443/hook", "192.168.1.1 is a private address"),
            ("http://100.100.100.200/", "100.100.100.200 is a carrier-grade NAT address"),
            ("http://0.0.0.0:8080/", "0.0.0.0 is an unspecified address"),
            ("http://[fe80::1]/", "fe80::1 is a link-local address"),
        ];
        for (url, detail) in cases {
            let refused = refused(url).await;
            assert_eq!(refused.code(), "webhook_url_not_allowed", "{url}");
            assert_eq!(refused.to_string(), detail, "{url}");
        }
    }

    #[tokio::test]
    async fn refuses_the_other_spellings_of_loopback() {
        for url in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::ffff:7f00:1]/",
        ] {
            let refused = refused(url).await;
            assert!(
                matches!(refused, UrlRefused::NotAllowed { class: AddressClass::Loopback, name: None, .. }),
                "{url}: {refused:?}"
            );
        }
    }

    #[tokio::test]
    async fn refuses_a_name_that_resolves_to_loopback() {
        let refused = refused("http://localhost:3000/hooks").await;
        assert_eq!(refused.code(), "webhook_url_not_allowed");
        let UrlRefused::NotAllowed { name, addr, class } = &refused else { panic!("{refused:?}") };
        assert_eq!(name.as_deref(), Some("localhost"));
        assert!(addr.is_loopback(), "{addr}");
        assert_eq!(*class, AddressClass::Loopback);
        assert_eq!(refused.to_string(), format!("localhost resolves to {addr}, which is a loopback address"));
    }

    #[tokio::test]
    async fn refuses_bad_syntax_with_its_own_code() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        let cases = [
            ("ftp://example.com/", "the URL must use https or http, not ftp"),
            ("file:///etc/passwd", "the URL must use https or http, not file"),
            ("http://user:pw@example.com/", "the URL must not contain a user name or password"),
            ("https://user@example.com/", "the URL must not contain a user name or password"),
            ("https://:pw@example.com/", "the URL must not contain a user name or password"),
            ("example.com/hook", "the URL is not valid: relative URL without a base"),
            ("http://", "the URL is not valid: empty host"),
            (long.as_str(), "the URL is longer than 2048 characters"),
        ];
        for (url, detail) in cases {
            let refused = check_syntax(url).unwrap_err();
            assert_eq!(refused.code(), "webhook_url_invalid", "{url}");
            assert_eq!(refused.to_string(), detail, "{url}");
        }
        // resolve_and_check does not trust its caller to have checked the syntax.
        let ftp = Url::parse("ftp://93.184.216.34/").unwrap();
        assert_eq!(resolve_and_check(&UrlPolicy::default(), &ftp).await.unwrap_err().code(), "webhook_url_invalid");
    }

    #[tokio::test]
    async fn accepts_public_literals_with_the_right_port() {
        let addrs = check(&UrlPolicy::default(), "https://93.184.216.34/hook").await.unwrap();
        assert_eq!(addrs, ["93.184.216.34:443".parse::<SocketAddr>().unwrap()]);
        let addrs = check(&UrlPolicy::default(), "http://93.184.216.34/hook").await.unwrap();
        assert_eq!(addrs, ["93.184.216.34:80".parse::<SocketAddr>().unwrap()]);
        let addrs = check(&UrlPolicy::default(), "http://[2606:2800:220:1:248:1893:25c8:1946]:8080/").await.unwrap();
        assert_eq!(addrs, ["[2606:2800:220:1:248:1893:25c8:1946]:8080".parse::<SocketAddr>().unwrap()]);
        // The IPv4-mapped form of a public address reaches that public address.
        assert!(check(&UrlPolicy::default(), "https://[::ffff:93.184.216.34]/").await.is_ok());
    }

    #[tokio::test]
    async fn the_allow_list_opens_exactly_its_ranges() {
        let policy = UrlPolicy::new(vec![cidr("127.0.0.1/32")]);
        let addrs = check(&policy, "http://127.0.0.1:9000/").await.unwrap();
        assert_eq!(addrs, ["127.0.0.1:9000".parse::<SocketAddr>().unwrap()]);
        assert!(check(&policy, "http://[::ffff:127.0.0.1]:9000/").await.is_ok());
        assert_eq!(check(&policy, "http://127.0.0.2:9000/").await.unwrap_err().code(), "webhook_url_not_allowed");
        assert_eq!(check(&policy, "http://10.0.0.1/").await.unwrap_err().code(), "webhook_url_not_allowed");
        assert_eq!(check(&policy, "http://[::1]:9000/").await.unwrap_err().code(), "webhook_url_not_allowed");

        let policy = UrlPolicy::new(vec![cidr("10.0.0.0/8"), cidr("::1/128")]);
        assert!(check(&policy, "http://10.200.3.4/").await.is_ok());
        assert!(check(&policy, "http://[::1]/").await.is_ok());
        assert!(!policy.allows("127.0.0.1".parse().unwrap()));
        assert!(policy.allows("8.8.8.8".parse().unwrap()));
        assert!(UrlPolicy::default().allow.is_empty());
    }

    #[test]
    fn classifies_every_range() {
        use AddressClass::*;
        let cases: &[(&str, Option<AddressClass>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.255.255.255", Some(Unspecified)),
            ("127.255.0.1", Some(Loopback)),
            ("10.255.255.255", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("192.168.0.1", Some(Private)),
            ("169.254.0.1", Some(LinkLocal)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("100.128.0.1", None),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.2.1", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.20.0.1", None),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("::192.168.1.1", Some(Private)),
            ("64:ff9b::127.0.0.1", Some(Loopback)),
            ("64:ff9b::10.1.2.3", Some(Private)),
            ("64:ff9b::8.8.8.8", None),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(SiteLocal)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("2001:2::1", Some(Benchmarking)),
            ("100::1", Some(Reserved)),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001::200e", None),
        ];
        for (ip, class) in cases {
            assert_eq!(classify(ip.parse().unwrap()), *class, "{ip}");
        }
    }

    #[test]
    fn cidr_blocks_parse_and_contain() {
        let lo = cidr("127.0.0.1/32");
        assert!(lo.contains("127.0.0.1".parse().unwrap()));
        assert!(!lo.contains("127.0.0.2".parse().unwrap()));
        assert!(!lo.contains("::1".parse().unwrap()));
        let ten = cidr("10.0.0.0/8");
        assert!(ten.contains("10.1.2.3".parse().unwrap()));
        assert!(!ten.contains("11.0.0.0".parse().unwrap()));
        let v6 = cidr("::1/128");
        assert!(v6.contains("::1".parse().unwrap()));
        assert!(!v6.contains("::2".parse().unwrap()));
        let all = cidr("0.0.0.0/0");
        assert!(all.contains("255.255.255.255".parse().unwrap()));
        assert!(!all.contains("::".parse().unwrap()));
        assert!(cidr("fd00::/8").contains("fdff::1".parse().unwrap()));
        assert_eq!(cidr("192.168.1.5"), cidr("192.168.1.5/32"));
        assert_eq!(cidr(" fe80::/10 ").to_string(), "fe80::/10");
        assert_eq!((ten.network(), ten.prefix()), ("10.0.0.0".parse().unwrap(), 8));
    }

    #[test]
    fn cidr_errors_say_what_is_wrong() {
        let err = |s: &str| s.parse::<Cidr>().unwrap_err().to_string();
        assert_eq!(err("10.0.0.1/8"), "\"10.0.0.1/8\" has address bits set after the prefix; did you mean 10.0.0.0/8?");
        assert_eq!(err("10.0.0.0/33"), "\"10.0.0.0/33\": the prefix length of an IPv4 block is at most 32");
        assert_eq!(err("::1/129"), "\"::1/129\": the prefix length of an IPv6 block is at most 128");
        assert_eq!(
            err("::/99999999999999999999"),
            "\"::/99999999999999999999\": the prefix length of an IPv6 block is at most 128"
        );
        for bad in ["", "abc", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0/8", "[::1]/128", "localhost/32"] {
            assert!(matches!(bad.parse::<Cidr>(), Err(CidrError::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(UrlRefused::Invalid(String::new()).code(), "webhook_url_invalid");
        let unresolvable = UrlRefused::Unresolvable { host: "nx.invalid".into(), reason: "no addresses".into() };
        assert_eq!(unresolvable.code(), "webhook_url_unresolvable");
        assert_eq!(unresolvable.to_string(), "nx.invalid could not be resolved: no addresses");
    }
}

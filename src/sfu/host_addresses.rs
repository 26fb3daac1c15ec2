//! Which addresses the media socket is announced on, and how several of them reach the answer's SDP.
//!
//! Every peer connection shares one UDP socket. webrtc-rs (0.17) makes one host candidate per local address and
//! gives each the same muxed connection, and each candidate runs its own read loop on it: a datagram goes to
//! whichever loop reads first, so an ICE check that arrived on one address is booked on another address's pair,
//! its answer on a third. With two or more addresses a nomination can land on a pair that never "succeeded" and the
//! connection stalls until a later check happens to be booked right (seen as half the browser viewers failing and
//! publishers taking seconds with `include_loopback` beside the machine's address).
//!
//! The socket is one transport address family whatever the destination, so the fix is to tell ICE so: the agent
//! gathers exactly one host candidate (the first address chosen here), and the answer lists every chosen address
//! as a host candidate on the same port ([`HostAddresses::announce`]). All checks then meet one local candidate and
//! one consistent set of pairs, whichever address the peer used.
//!
//! `media.interfaces` chooses the interfaces whose addresses are offered; by default every interface except
//! container and virtual bridges ([`DEFAULT_EXCLUDED`]). `media.public_ips` (1:1 NAT) replaces the offered
//! addresses; `media.udp_listen` on one address offers that address only. A bound address that no interface lists
//! (127.0.0.2, as several nodes on one host use) is gathered on under another address of the machine and announced
//! as itself (see [`stand_in`]).

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::MediaConfig;

/// Interface name prefixes left out when `media.interfaces` is empty: container, VM and overlay bridges, which
/// peers outside the host cannot reach.
pub(crate) const DEFAULT_EXCLUDED: &[&str] = &[
    "docker", "br-", "veth", "virbr", "vnet", "cni", "flannel", "cali", "weave", "vxlan", "lxcbr",
    "lxdbr", "podman", "kube-", "tunl", "cilium", "genev",
];

/// The addresses announced for the media socket.
#[derive(Debug, Clone)]
pub(crate) struct HostAddresses {
    /// The one local address webrtc-rs gathers its host candidate on.
    gather: IpAddr,
    /// Every address announced in answers, best first (`gather`'s own or its public mapping is first).
    offered: Arc<[IpAddr]>,
}

/// A local interface address, as the operating system lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterfaceAddress {
    pub interface: String,
    pub ip: IpAddr,
}

impl HostAddresses {
    /// Chooses from the interfaces of this machine.
    pub(crate) fn from_system(
        config: &MediaConfig,
        bound: IpAddr,
    ) -> Result<HostAddresses, String> {
        let interfaces = system_interfaces();
        HostAddresses::choose(config, bound, &interfaces)
    }

    /// Chooses the addresses from `interfaces` (in their order) under `config` for a socket bound to `bound`.
    pub(crate) fn choose(
        config: &MediaConfig,
        bound: IpAddr,
        interfaces: &[InterfaceAddress],
    ) -> Result<HostAddresses, String> {
        let public = parse_public_ips(&config.public_ips)?;
        let local = if bound.is_unspecified() {
            local_candidates(config, bound, interfaces)
        } else {
            vec![bound]
        };
        let Some(&first) = local.first() else {
            return Err(no_address_reason(config));
        };
        let gather = if bound.is_unspecified() || interfaces.iter().any(|a| a.ip == bound) {
            first
        } else {
            stand_in(bound, interfaces)?
        };
        let offered: Vec<IpAddr> = if public.is_empty() { local } else { public };
        Ok(HostAddresses {
            gather,
            offered: offered.into(),
        })
    }

    /// The local address webrtc-rs gathers its one host candidate on.
    pub(crate) fn gather(&self) -> IpAddr {
        self.gather
    }

    /// Every address announced, best first.
    pub(crate) fn offered(&self) -> &[IpAddr] {
        &self.offered
    }

    /// Rewrites the host candidate gathered on [`Self::gather`] in an SDP (or a list of `candidate:` attribute
    /// values) into one host candidate per offered address, same port and component, each with its own
    /// foundation and a priority that falls with its place in the list. Other lines are kept as they are.
    pub(crate) fn announce(&self, sdp: &str) -> String {
        let mut out = String::with_capacity(sdp.len() + 128 * self.offered.len());
        for line in sdp.split_inclusive('\n') {
            let body = line.trim_end_matches(['\r', '\n']);
            let eol = &line[body.len()..];
            let (prefix, value) = match body.strip_prefix("a=") {
                Some(v) => ("a=", v),
                None => ("", body),
            };
            match self.expand(value) {
                Some(lines) => {
                    // Between the lines the input's end of line (CRLF if its last line had none), after the last
                    // one exactly what the input had.
                    let between = format!("{}{prefix}", if eol.is_empty() { "\r\n" } else { eol });
                    out.push_str(prefix);
                    out.push_str(&lines.join(&between));
                    out.push_str(eol);
                }
                None => out.push_str(line),
            }
        }
        out
    }

    /// The candidate attribute values `value` stands for: `None` when it is not our gathered host candidate.
    fn expand(&self, value: &str) -> Option<Vec<String>> {
        let fields: Vec<&str> = value.split(' ').collect();
        // candidate:<foundation> <component> <transport> <priority> <address> <port> typ host [...]
        if fields.len() < 8
            || !fields[0].starts_with("candidate:")
            || fields[6] != "typ"
            || fields[7] != "host"
        {
            return None;
        }
        if fields[4].parse::<IpAddr>().ok()? != self.gather {
            return None;
        }
        let component: u32 = fields[1].parse().ok()?;
        let rest = &fields[5..];
        Some(
            self.offered
                .iter()
                .enumerate()
                .map(|(i, ip)| {
                    // RFC 8445 5.1.2.1: type preference 126 (host), local preference by place, then component.
                    let local_pref =
                        65535u32.saturating_sub(u32::try_from(i).unwrap_or(u32::MAX)) & 0xffff;
                    let priority = (126u32 << 24)
                        | (local_pref << 8)
                        | (256u32.saturating_sub(component) & 0xff);
                    format!(
                        "candidate:{} {} {} {} {} {}",
                        foundation(*ip, fields[2]),
                        fields[1],
                        fields[2],
                        priority,
                        ip,
                        rest.join(" ")
                    )
                })
                .collect(),
        )
    }
}

/// A foundation for a host candidate: equal for equal (type, base address, transport), as RFC 8445 5.1.1.3 asks.
fn foundation(ip: IpAddr, transport: &str) -> u32 {
    // FNV-1a: stable across runs and builds, unlike the std hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in format!("host{ip}{transport}").bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The interface address webrtc-rs gathers on for a socket bound to `bound`, an address no interface lists (a
/// loopback address other than 127.0.0.1 (Linux answers for all of 127.0.0.0/8 on `lo`, which lists 127.0.0.1
/// only), or one bound with IP_FREEBIND). webrtc-rs makes host candidates only on listed addresses, so gathering on
/// `bound` itself would find none ("Candidate IP could not be found") and no peer could connect. The candidate's
/// address is only a label inside the agent: every candidate shares the one socket, which sends from `bound`, and
/// [`HostAddresses::announce`] replaces the label with the offered addresses. An address of the same family, a
/// loopback one for a loopback `bound` (webrtc-rs skips loopback addresses otherwise).
fn stand_in(bound: IpAddr, interfaces: &[InterfaceAddress]) -> Result<IpAddr, String> {
    let same_family = |ip: &IpAddr| ip.is_ipv4() == bound.is_ipv4() && !ip.is_unspecified();
    interfaces
        .iter()
        .map(|a| a.ip)
        .filter(same_family)
        .find(|ip| ip.is_loopback() == bound.is_loopback())
        .or_else(|| interfaces.iter().map(|a| a.ip).find(same_family))
        .ok_or_else(|| {
            format!(
                "media.udp_listen: {bound} is on no interface, and no interface has an address of its family to \
                 gather on"
            )
        })
}

fn parse_public_ips(entries: &[String]) -> Result<Vec<IpAddr>, String> {
    entries
        .iter()
        .map(|entry| {
            // "public" or "public/local", as webrtc-rs's 1:1 NAT mapping spells them; the public part is announced.
            let public = entry.split('/').next().unwrap_or_default().trim();
            public
                .parse::<IpAddr>()
                .map_err(|_| format!("media.public_ips: {entry:?} is not an IP address"))
        })
        .collect()
}

/// The interfaces' addresses that `config` offers for a socket bound to the unspecified address `bound`, best
/// first: non-loopback IPv4, non-loopback IPv6, then loopback (when offered).
fn local_candidates(
    config: &MediaConfig,
    bound: IpAddr,
    interfaces: &[InterfaceAddress],
) -> Vec<IpAddr> {
    let loopback_wanted = config.include_loopback;
    let mut chosen: Vec<IpAddr> = Vec::new();
    let mut loopback_only: Vec<IpAddr> = Vec::new();
    for a in interfaces {
        if !interface_selected(&config.interfaces, &a.interface) {
            continue;
        }
        let family_ok = match a.ip {
            IpAddr::V4(_) => bound.is_ipv4() || config.ipv6,
            // Link-local IPv6 needs a scope id no SDP carries; a v4 socket cannot send IPv6.
            IpAddr::V6(v6) => config.ipv6 && bound.is_ipv6() && !is_link_local_v6(&v6),
        };
        if !family_ok
            || a.ip.is_unspecified()
            || chosen.contains(&a.ip)
            || loopback_only.contains(&a.ip)
        {
            continue;
        }
        if a.ip.is_loopback() {
            loopback_only.push(a.ip);
        } else {
            chosen.push(a.ip);
        }
    }
    chosen.sort_by_key(|ip| ip.is_ipv6());
    loopback_only.sort_by_key(|ip| ip.is_ipv6());
    if loopback_wanted || chosen.is_empty() {
        // A machine with nothing but loopback (a laptop offline, a test box) still gets a working server.
        if chosen.is_empty() && !loopback_wanted && !loopback_only.is_empty() {
            tracing::warn!(
                "no interface address to offer for media; offering loopback only (set media.interfaces, or \
                 media.public_ips, for peers on other machines)"
            );
        }
        chosen.extend(loopback_only);
    }
    chosen
}

fn is_link_local_v6(ip: &std::net::Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

/// Whether `media.interfaces` selects the interface `name`: listed names, `prefix*` patterns; empty means every
/// interface but [`DEFAULT_EXCLUDED`] ones.
pub(crate) fn interface_selected(patterns: &[String], name: &str) -> bool {
    if patterns.is_empty() {
        return !DEFAULT_EXCLUDED.iter().any(|p| name.starts_with(p));
    }
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

fn no_address_reason(config: &MediaConfig) -> String {
    if config.interfaces.is_empty() {
        "no interface address to offer for media (media.interfaces, media.include_loopback, media.ipv6)".into()
    } else {
        format!(
            "no address on the interfaces in media.interfaces {:?} (check the names with `ip address`)",
            config.interfaces
        )
    }
}

/// The addresses of this machine's interfaces, in the order the operating system lists them.
fn system_interfaces() -> Vec<InterfaceAddress> {
    match webrtc_util::ifaces::ifaces() {
        Ok(list) => list
            .into_iter()
            .filter_map(|i| {
                i.addr.map(|a| InterfaceAddress {
                    interface: i.name,
                    ip: a.ip(),
                })
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the network interfaces");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(f: impl FnOnce(&mut MediaConfig)) -> MediaConfig {
        let mut c = crate::config::Config::defaults().unwrap().media;
        f(&mut c);
        c
    }

    fn machine() -> Vec<InterfaceAddress> {
        [
            ("lo", "127.0.0.1"),
            ("lo", "::1"),
            ("eth0", "192.0.2.2"),
            ("eth0", "fd00::2"),
            ("eth0", "fe80::1"),
            ("docker0", "172.17.0.1"),
            ("eth1", "10.1.2.3"),
        ]
        .into_iter()
        .map(|(n, ip)| InterfaceAddress {
            interface: n.into(),
            ip: ip.parse().unwrap(),
        })
        .collect()
    }

    const ANY4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

    #[test]
    fn the_default_offers_every_interface_but_bridges_and_loopback() {
        let a = HostAddresses::choose(&config(|_| {}), ANY4, &machine()).unwrap();
        let want: Vec<IpAddr> = vec!["192.0.2.2".parse().unwrap(), "10.1.2.3".parse().unwrap()];
        assert_eq!(a.offered(), &want[..]);
        assert_eq!(a.gather(), want[0]);
    }

    #[test]
    fn loopback_comes_last_and_interfaces_select_by_name_or_prefix() {
        let c = config(|c| {
            c.include_loopback = true;
            c.interfaces = vec!["eth1".into(), "l*".into(), "docker0".into()];
        });
        let a = HostAddresses::choose(&c, ANY4, &machine()).unwrap();
        let want: Vec<IpAddr> = ["172.17.0.1", "10.1.2.3", "127.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(a.offered(), &want[..]);
    }

    #[test]
    fn ipv6_needs_a_v6_socket_and_never_offers_link_local() {
        let c = config(|c| c.ipv6 = true);
        let any6: IpAddr = "::".parse().unwrap();
        let a = HostAddresses::choose(&c, any6, &machine()).unwrap();
        let got: Vec<String> = a.offered().iter().map(|i| i.to_string()).collect();
        assert_eq!(got, ["192.0.2.2", "10.1.2.3", "fd00::2"]);
        let a = HostAddresses::choose(&c, ANY4, &machine()).unwrap();
        assert!(a.offered().iter().all(|i| i.is_ipv4()));
    }

    #[test]
    fn a_bound_address_or_public_ips_replace_the_interfaces() {
        let bound: IpAddr = "10.1.2.3".parse().unwrap();
        let a = HostAddresses::choose(&config(|_| {}), bound, &machine()).unwrap();
        assert_eq!(a.offered(), &[bound][..]);
        let c =
            config(|c| c.public_ips = vec!["203.0.113.7".into(), "198.51.100.1/10.1.2.3".into()]);
        let a = HostAddresses::choose(&c, ANY4, &machine()).unwrap();
        let got: Vec<String> = a.offered().iter().map(|i| i.to_string()).collect();
        assert_eq!(got, ["203.0.113.7", "198.51.100.1"]);
        assert_eq!(a.gather().to_string(), "192.0.2.2");
        let bad = config(|c| c.public_ips = vec!["example.com".into()]);
        let e = HostAddresses::choose(&bad, ANY4, &machine()).unwrap_err();
        assert!(e.contains("media.public_ips"), "{e}");
    }

    #[test]
    fn an_address_no_interface_lists_is_gathered_under_one_that_is_and_announced_as_itself() {
        // 127.0.0.2 answers on Linux's `lo`, which lists 127.0.0.1 only.
        let bound: IpAddr = "127.0.0.2".parse().unwrap();
        let a = HostAddresses::choose(&config(|_| {}), bound, &machine()).unwrap();
        assert_eq!(a.offered(), &[bound][..]);
        assert_eq!(a.gather().to_string(), "127.0.0.1");
        let out = a.announce("a=candidate:1 1 udp 2130706431 127.0.0.1 8189 typ host\r\n");
        assert!(
            out.contains(" 127.0.0.2 8189 typ host") && !out.contains("127.0.0.1"),
            "{out}"
        );
        // With public_ips the public address is announced, still gathered on a listed one.
        let c = config(|c| c.public_ips = vec!["203.0.113.7".into()]);
        let a = HostAddresses::choose(&c, bound, &machine()).unwrap();
        assert_eq!(a.offered(), &["203.0.113.7".parse::<IpAddr>().unwrap()][..]);
        assert_eq!(a.gather().to_string(), "127.0.0.1");
        // A non-loopback address bound with IP_FREEBIND: a non-loopback interface address of its family.
        let freebind: IpAddr = "198.51.100.9".parse().unwrap();
        let a = HostAddresses::choose(&config(|_| {}), freebind, &machine()).unwrap();
        assert_eq!(a.gather().to_string(), "192.0.2.2");
        // A listed address is gathered on as itself.
        let listed: IpAddr = "10.1.2.3".parse().unwrap();
        let a = HostAddresses::choose(&config(|_| {}), listed, &machine()).unwrap();
        assert_eq!(a.gather(), listed);
        // Nothing of the family to gather on: an error naming the key.
        let v6: IpAddr = "fd00::99".parse().unwrap();
        let v4_only: Vec<InterfaceAddress> =
            machine().into_iter().filter(|a| a.ip.is_ipv4()).collect();
        let e = HostAddresses::choose(&config(|_| {}), v6, &v4_only).unwrap_err();
        assert!(e.contains("media.udp_listen"), "{e}");
    }

    #[test]
    fn an_interface_list_that_matches_nothing_is_an_error_naming_the_key() {
        let c = config(|c| c.interfaces = vec!["wlan9".into()]);
        let e = HostAddresses::choose(&c, ANY4, &machine()).unwrap_err();
        assert!(e.contains("media.interfaces"), "{e}");
        // Nothing but loopback on the machine: loopback, with a warning, rather than a server that cannot connect.
        let lo: Vec<InterfaceAddress> = machine()
            .into_iter()
            .filter(|a| a.interface == "lo")
            .collect();
        let a = HostAddresses::choose(&config(|_| {}), ANY4, &lo).unwrap();
        assert_eq!(a.offered(), &["127.0.0.1".parse::<IpAddr>().unwrap()][..]);
    }

    #[test]
    fn the_gathered_candidate_becomes_one_per_address_with_falling_priorities() {
        let c = config(|c| c.include_loopback = true);
        let a = HostAddresses::choose(&c, ANY4, &machine()).unwrap();
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   a=candidate:123 1 udp 2130706431 192.0.2.2 8189 typ host\r\n\
                   a=candidate:9 1 udp 1694498815 203.0.113.9 4000 typ srflx raddr 0.0.0.0 rport 0\r\n\
                   a=end-of-candidates\r\n";
        let out = a.announce(sdp);
        let hosts: Vec<&str> = out.lines().filter(|l| l.contains("typ host")).collect();
        assert_eq!(hosts.len(), 3, "{out}");
        let mut priorities = Vec::new();
        let mut foundations = Vec::new();
        for (line, ip) in hosts.iter().zip(["192.0.2.2", "10.1.2.3", "127.0.0.1"]) {
            let f: Vec<&str> = line.trim_start_matches("a=").split(' ').collect();
            assert_eq!((f[4], f[5], f[7]), (ip, "8189", "host"), "{line}");
            priorities.push(f[3].parse::<u32>().unwrap());
            foundations.push(f[0].to_owned());
        }
        assert_eq!(priorities[0], 2130706431);
        assert!(priorities.windows(2).all(|w| w[0] > w[1]), "{priorities:?}");
        foundations.sort();
        foundations.dedup();
        assert_eq!(foundations.len(), 3);
        assert!(
            out.contains("typ srflx") && out.ends_with("a=end-of-candidates\r\n"),
            "{out}"
        );
        // Bare attribute values (an ICE restart's candidate list) expand the same way.
        let bare = a.announce("candidate:123 1 udp 2130706431 192.0.2.2 8189 typ host");
        assert_eq!(bare.lines().count(), 3, "{bare}");
        assert!(!bare.ends_with('\n'));
    }
}

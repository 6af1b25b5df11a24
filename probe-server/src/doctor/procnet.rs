//! Who holds a port: the socket tables of `/proc/net/{udp,udp6,tcp,tcp6}` (this network
//! namespace's) and the `socket:[inode]` links under `/proc/*/fd` (what `ss -p` reads).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
}

/// TCP state LISTEN in `/proc/net/tcp` (`st` column).
pub const TCP_LISTEN: u8 = 0x0A;

/// One row of a socket table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sock {
    pub local: SocketAddr,
    pub state: u8,
    /// Bytes waiting in the receive queue.
    pub rx_queue: u64,
    pub inode: u64,
    /// Datagrams the kernel dropped for this socket (UDP only; TCP tables have no such column).
    pub drops: Option<u64>,
}

/// A process holding a socket.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Owner {
    pub pid: u32,
    pub process: String,
    /// The executable's file name (`/proc/PID/exe`), when it could be read: comm is cut to 15
    /// characters and can be set by the process, so the name alone may not say rtcd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

impl Owner {
    /// Whether this is `target`'s process (RTCD, or Mattermost and its plugin process): its
    /// comm or executable name says so, as `rtcd_env` finds RTCD's process.
    pub fn is(&self, target: &crate::rtcd_env::Target) -> bool {
        (target.says)(&self.process) || self.exe.as_deref().is_some_and(target.says)
    }
}

/// What a scan of `/proc/*/fd` found, and how far it could see.
#[derive(Debug, Default)]
pub struct OwnerScan {
    pub by_inode: HashMap<u64, Vec<Owner>>,
    /// It ended before its deadline.
    pub complete: bool,
    /// Processes whose fd directory was refused (other users' processes without root).
    pub refused: usize,
}

/// Parses one table's text; malformed rows are skipped (the kernel's format is stable, but a
/// reader must never fail on a row it does not understand).
pub fn parse_table(text: &str, proto: Proto) -> Vec<Sock> {
    text.lines()
        .skip(1)
        .filter_map(|l| parse_row(l, proto))
        .collect()
}

fn parse_row(line: &str, proto: Proto) -> Option<Sock> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 {
        return None;
    }
    let local = parse_addr(f[1])?;
    let state = u8::from_str_radix(f[3], 16).ok()?;
    let rx_queue = u64::from_str_radix(f[4].split_once(':')?.1, 16).ok()?;
    let inode = f[9].parse().ok()?;
    let drops = match proto {
        Proto::Udp => f.get(12).and_then(|d| d.parse().ok()),
        Proto::Tcp => None,
    };
    Some(Sock {
        local,
        state,
        rx_queue,
        inode,
        drops,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6): each 32-bit word is printed as the kernel
/// holds it in memory, so the bytes come back with the host's native order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Both families of one protocol, from this process's network namespace.
pub fn read_tables(proto: Proto) -> Result<Vec<Sock>, String> {
    let names: &[&str] = match proto {
        Proto::Udp => &["udp", "udp6"],
        Proto::Tcp => &["tcp", "tcp6"],
    };
    let mut out = Vec::new();
    for n in names {
        match std::fs::read_to_string(format!("/proc/net/{n}")) {
            Ok(t) => out.extend(parse_table(&t, proto)),
            // IPv6 may be disabled on the host: udp6 missing is not an error.
            Err(_) if n.ends_with('6') => {}
            Err(e) => return Err(format!("cannot read /proc/net/{n}: {e}")),
        }
    }
    Ok(out)
}

/// Sockets on `port`, limited to `addrs` when given (RTCD's `ice_address_*`); a wildcard bind
/// always counts.
pub fn on_port<'a>(
    socks: &'a [Sock],
    port: u16,
    addrs: &[IpAddr],
    listen_only: bool,
) -> Vec<&'a Sock> {
    socks
        .iter()
        .filter(|s| s.local.port() == port)
        .filter(|s| !listen_only || s.state == TCP_LISTEN)
        .filter(|s| {
            addrs.is_empty() || s.local.ip().is_unspecified() || addrs.contains(&s.local.ip())
        })
        .collect()
}

/// Maps socket inodes to the processes holding them, scanning `/proc/*/fd` until `deadline`.
/// Returns what was found and whether the scan completed (it needs root for other users'
/// processes: unreadable fd directories are skipped, so "no owner" can mean "not visible").
pub fn owners(inodes: &HashSet<u64>, deadline: Instant) -> (HashMap<u64, Vec<Owner>>, bool) {
    let scan = scan_owners(inodes, deadline);
    (scan.by_inode, scan.complete)
}

/// [`owners`], also counting the processes whose fds could not be read, so that "no owner
/// found" can be told apart from "owner hidden from this user".
pub fn scan_owners(inodes: &HashSet<u64>, deadline: Instant) -> OwnerScan {
    let mut scan = OwnerScan::default();
    if inodes.is_empty() {
        scan.complete = true;
        return scan;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return scan;
    };
    for p in procs.flatten() {
        if Instant::now() >= deadline {
            return scan;
        }
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let fds = match std::fs::read_dir(p.path().join("fd")) {
            Ok(fds) => fds,
            Err(e) => {
                // A process that exited meanwhile is ENOENT: only a refusal hides an owner.
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    scan.refused += 1;
                }
                continue;
            }
        };
        let mut mine = HashSet::new();
        for fd in fds.flatten() {
            if let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| socket_inode(&l.to_string_lossy()))
            {
                if inodes.contains(&inode) {
                    mine.insert(inode);
                }
            }
        }
        if mine.is_empty() {
            continue;
        }
        let process = process_name(pid);
        let exe = exe_name(pid);
        for inode in mine {
            let list = scan.by_inode.entry(inode).or_default();
            list.push(Owner {
                pid,
                process: process.clone(),
                exe: exe.clone(),
            });
        }
    }
    scan.complete = true;
    scan
}

/// `/proc/PID/exe`'s file name (readable by the process's owner and root).
pub fn exe_name(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// `/proc/PID/comm` (at most 15 characters, as `ps` shows it).
pub fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The process holding the most of `socks`, and every distinct holder.
pub fn main_owner(
    socks: &[&Sock],
    by_inode: &HashMap<u64, Vec<Owner>>,
) -> (Option<Owner>, Vec<Owner>) {
    let mut count: HashMap<Owner, usize> = HashMap::new();
    for s in socks {
        for o in by_inode.get(&s.inode).into_iter().flatten() {
            *count.entry(o.clone()).or_default() += 1;
        }
    }
    let mut all: Vec<(Owner, usize)> = count.into_iter().collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let main = all.first().map(|(o, _)| o.clone());
    (main, all.into_iter().map(|(o, _)| o).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded on a Linux 6.x x86-64 host (little-endian): an RTCD-like UDP socket on
    // 203.0.113.2:8443 with drops, a wildcard one, and IPv6 rows.
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  112: 027100CB:20FB 00000000:0000 07 00000000:00000900 00 00000000     0        0 48213 2 00000000a1b2c3d4 57
  113: 00000000:20FB 00000000:0000 07 00000000:00000000 00 00000000     0        0 48214 2 00000000a1b2c3d5 0
  114: 0100007F:0035 00000000:0000 07 00000000:00000000 00 00000000   101        0 1201 2 00000000a1b2c3d6 0
garbage row
";
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  40: 00000000000000000000000001000000:20FB 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5511 2 0000000011112222 3
  41: B80D0120000000000000000001000000:1F6D 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5512 2 0000000011112223 0
";
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F6D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   1: 027100CB:20FB 037100CB:C350 01 00000000:00000000 00:00000000 00000000     0        0 778 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn parses_udp_rows_with_drops() {
        let rows = parse_table(UDP, Proto::Udp);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].local, "203.0.113.2:8443".parse().unwrap());
        assert_eq!(
            (rows[0].inode, rows[0].drops, rows[0].rx_queue),
            (48213, Some(57), 0x900)
        );
        assert_eq!(rows[1].local, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(rows[2].local, "127.0.0.1:53".parse().unwrap());
    }

    #[test]
    fn parses_ipv6_rows() {
        let rows = parse_table(UDP6, Proto::Udp);
        assert_eq!(rows[0].local, "[::1]:8443".parse().unwrap());
        assert_eq!(rows[0].drops, Some(3));
        assert_eq!(rows[1].local, "[2001:db8::1]:8045".parse().unwrap());
    }

    #[test]
    fn tcp_rows_have_state_and_no_drops() {
        let rows = parse_table(TCP, Proto::Tcp);
        assert_eq!(rows[0].state, TCP_LISTEN);
        assert_eq!(rows[0].local.port(), 8045);
        // The TCP table's 13th column is not a drop counter.
        assert_eq!(rows[1].state, 1);
        assert_eq!(rows[0].drops, None);
        let listen = on_port(&rows, 8443, &[], true);
        assert!(
            listen.is_empty(),
            "an established connection is not a listener"
        );
    }

    #[test]
    fn port_filter_honours_ice_addresses() {
        let rows = parse_table(UDP, Proto::Udp);
        let only: Vec<IpAddr> = vec!["203.0.113.2".parse().unwrap()];
        assert_eq!(on_port(&rows, 8443, &[], false).len(), 2);
        // The wildcard socket still counts when ice_address_udp names one address.
        assert_eq!(on_port(&rows, 8443, &only, false).len(), 2);
        let other: Vec<IpAddr> = vec!["198.51.100.9".parse().unwrap()];
        assert_eq!(on_port(&rows, 8443, &other, false).len(), 1);
    }

    #[test]
    fn finds_this_process_as_owner_of_its_socket() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let rows = read_tables(Proto::Udp).unwrap();
        let mine = on_port(&rows, port, &[], false);
        assert_eq!(mine.len(), 1, "{rows:?}");
        let inodes = mine.iter().map(|s| s.inode).collect();
        let scan = scan_owners(&inodes, Instant::now() + std::time::Duration::from_secs(5));
        assert!(scan.complete);
        let (main, _) = main_owner(&mine, &scan.by_inode);
        let main = main.unwrap();
        assert_eq!(main.pid, std::process::id());
        // Our own executable is always readable: the name RTCD is known by when comm is not.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            main.exe.as_deref(),
            exe.file_name().and_then(|n| n.to_str())
        );
    }

    /// Without root, other users' fd directories are refused and counted, so "no owner" reads
    /// as "hidden", not "nobody". Run as root (as the project's tests are): one thread drops
    /// to nobody and scans again.
    #[test]
    fn refused_fd_directories_are_counted() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let inode = on_port(&read_tables(Proto::Udp).unwrap(), port, &[], false)[0].inode;
        let inodes: HashSet<u64> = [inode].into();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let scan = scan_owners(&inodes, deadline);
        assert_eq!(
            scan.refused, 0,
            "root reads every fd directory (run the tests as root)"
        );
        let child = std::thread::spawn(move || {
            // SAFETY: the raw syscall changes this thread's credentials only (glibc's wrapper
            // would change every thread's); the thread ends right after its scan. Dropping every
            // uid from 0 also clears its capabilities, so root's processes are hidden from it.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
            assert_eq!(rc, 0, "setresuid needs root");
            scan_owners(&inodes, deadline)
        });
        let hidden = child.join().unwrap();
        // pid 1 at least is root's.
        assert!(hidden.refused > 0, "{:?}", hidden.refused);
    }
}

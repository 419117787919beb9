//! Reaching the server: the target URL (loopback only), opening WebSockets
//! from many loopback source addresses with `TCP_NODELAY`, and the
//! open-file limit this process may use.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// Where the server is. Only loopback addresses are accepted: this tool
/// never sends traffic anywhere else.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http://host:port` without a trailing slash.
    pub http_base: String,
    /// `ws://host:port/ws/chat`.
    pub ws_url: String,
    /// The resolved address every socket connects to.
    pub addr: SocketAddr,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let parsed = reqwest::Url::parse(url).map_err(|err| format!("--url {url:?}: {err}"))?;
        if parsed.scheme() != "http" {
            return Err(format!(
                "--url {url:?}: only plain http:// servers on loopback are supported"
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("--url {url:?}: no host"))?;
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| format!("--url {url:?}: no port"))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = match bare.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) if bare.eq_ignore_ascii_case("localhost") => (bare, port)
                .to_socket_addrs()
                .map_err(|err| format!("--url {url:?}: cannot resolve localhost: {err}"))?
                .find(|a| a.is_ipv4())
                .unwrap_or(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)),
            Err(_) => {
                return Err(format!(
                    "--url {url:?}: the host must be a loopback address (127.0.0.0/8, ::1 or localhost)"
                ))
            }
        };
        if !addr.ip().is_loopback() {
            return Err(format!(
                "--url {url:?}: {} is not a loopback address; parley-load only talks to servers on this machine",
                addr.ip()
            ));
        }
        let authority = match addr.ip() {
            IpAddr::V4(ip) => format!("{ip}:{port}"),
            IpAddr::V6(ip) => format!("[{ip}]:{port}"),
        };
        Ok(Target {
            http_base: format!("http://{authority}"),
            ws_url: format!("ws://{authority}/ws/chat"),
            addr,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A comma-separated list of base URLs, one per node, each checked
    /// like [`Target::parse`]. At least one; no node twice.
    pub fn parse_list(urls: &str) -> Result<Vec<Target>, String> {
        let mut targets: Vec<Target> = Vec::new();
        for url in urls.split(',').map(str::trim) {
            if url.is_empty() {
                return Err(format!("--url {urls:?}: an empty entry in the list"));
            }
            let target = Target::parse(url)?;
            if targets.iter().any(|t| t.addr == target.addr) {
                return Err(format!("--url {urls:?}: {} is listed twice", target.addr));
            }
            targets.push(target);
        }
        Ok(targets)
    }
}

/// The source address for the `n`-th socket: sockets are spread over
/// 127.0.1.1 … 127.0.250.250 so no one source address runs out of ephemeral
/// ports. `None` (let the kernel pick) for an IPv6 server.
pub fn source_address(target: &Target, n: usize) -> Option<IpAddr> {
    if !target.addr.is_ipv4() {
        return None;
    }
    let host = (n % 250) as u8 + 1;
    let net = ((n / 250) % 250) as u8 + 1;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, net, host)))
}

/// Raises this process's soft open-file limit to its hard limit; returns the
/// limit now in force.
pub fn raise_open_file_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                return wanted.rlim_cur as u64;
            }
        }
        limit.rlim_cur as u64
    }
}

/// Small buffers: chat frames are small, and tens of thousands of sockets
/// each with the default 128 KiB read buffer would cost gigabytes. The read
/// buffer is zeroed before every read, so its size is paid per frame: at
/// 16 KiB that zeroing was a fifth of the tool's CPU receiving a broadcast.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(16 * 1024)
}

#[derive(Debug)]
pub enum ConnectError {
    /// The handshake was refused with 401: the token is stale.
    Unauthorized,
    Other(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Unauthorized => f.write_str("handshake refused with 401"),
            ConnectError::Other(why) => f.write_str(why),
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens one authenticated socket on `/ws/chat`, from source address
/// number `n`, with `TCP_NODELAY` set.
pub async fn open_socket(target: &Target, n: usize, token: &str) -> Result<Ws, ConnectError> {
    let other =
        |what: &str, err: &dyn std::fmt::Display| ConnectError::Other(format!("{what}: {err}"));
    let attempt = async {
        let socket = if target.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| other("socket", &e))?;
        if let Some(source) = source_address(target, n) {
            bind_address_no_port(&socket);
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|e| other(&format!("bind {source}"), &e))?;
        }
        let stream = socket
            .connect(target.addr)
            .await
            .map_err(|e| other("connect", &e))?;
        stream.set_nodelay(true).map_err(|e| other("nodelay", &e))?;
        let mut request = target
            .ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| other("request", &e))?;
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|e| other("token", &e))?;
        request.headers_mut().insert("Authorization", bearer);
        match tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await
        {
            Ok((ws, _)) => Ok(ws),
            Err(WsError::Http(response)) if response.status() == 401 => {
                Err(ConnectError::Unauthorized)
            }
            Err(WsError::Http(response)) => Err(ConnectError::Other(format!(
                "handshake refused with {}",
                response.status()
            ))),
            Err(e) => Err(other("handshake", &e)),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(ConnectError::Other("connect timed out".into())))
}

/// Lets the kernel pick the source port at connect time (per destination)
/// rather than at bind time, so a bound source address is not limited to one
/// socket per port across all destinations.
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;
    let one: libc::c_int = 1;
    // SAFETY: a plain setsockopt on a socket we own; failure is harmless.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5:9/",
            "http://localhost:18090",
            "http://[::1]:8080",
        ] {
            let target = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(target.addr.ip().is_loopback());
            assert!(target.ws_url.ends_with("/ws/chat"));
        }
    }

    #[test]
    fn other_hosts_are_refused() {
        for url in [
            "http://10.0.0.1:8080",
            "http://192.168.1.2",
            "http://example.com",
            "http://8.8.8.8:80",
            "https://127.0.0.1:8080",
        ] {
            assert!(Target::parse(url).is_err(), "{url} was accepted");
        }
    }

    #[test]
    fn a_list_of_nodes_is_checked_entry_by_entry() {
        let targets = Target::parse_list("http://127.0.0.1:8081, http://127.0.0.1:8082/").unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[1].port(), 8082);
        assert_eq!(
            Target::parse_list("http://127.0.0.1:8081").unwrap().len(),
            1
        );
        for list in [
            "http://127.0.0.1:8081,http://10.0.0.1:8082",
            "http://127.0.0.1:8081,",
            "http://127.0.0.1:8081,http://127.0.0.1:8081",
        ] {
            assert!(Target::parse_list(list).is_err(), "{list} was accepted");
        }
    }

    #[test]
    fn source_addresses_are_spread_over_loopback() {
        let target = Target::parse("http://127.0.0.1:8080").unwrap();
        let a = source_address(&target, 0).unwrap();
        let b = source_address(&target, 1).unwrap();
        let c = source_address(&target, 250).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!((0..70_000).all(|n| source_address(&target, n).unwrap().is_loopback()));
    }
}

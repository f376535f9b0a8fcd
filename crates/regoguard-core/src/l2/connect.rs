//! How the L2 reaches Redis: one server (`redis://`, `rediss://`, `unix://`), a Cluster
//! (`redis+cluster://`, `rediss+cluster://`) or the master a Sentinel names
//! (`redis+sentinel://`, `rediss+sentinel://`). README, "Production Redis".
//!
//! [`Target`] is what a `RedisConfig` resolves to once; [`Conn`] is one shared, reconnecting
//! connection to it, an enum implementing `redis::aio::ConnectionLike`, so every command and
//! pipeline in `l2.rs` runs unchanged in each mode.
//!
//! # Cluster
//! The L2 sends no multi-key command that must be atomic: its pipelines are plain (not
//! `MULTI`), so [`Conn`] sends each of their commands to its own slot (the `redis` crate would
//! send a whole pipeline to one node), `UNLINK` is split by slot by the crate, the one script
//! (raising an epoch) is sent once per key, and `SCAN` goes to every primary
//! ([`Conn::scan_match`]). So keys need no hash tag, and one decision space is spread over the
//! whole cluster instead of filling one slot. (A hash tag could not keep a decision with its
//! tag indexes anyway: a tag's set is shared by decisions of every slot, so only one slot for
//! the whole space would, and then one shard takes all the load.)
//!
//! Pub/sub uses regular `PUBLISH`/`SUBSCRIBE`: a Cluster forwards a regular message to every
//! node, so one subscription to any node hears every instance, and losing that node is a lost
//! subscription like any other (the subscriber then tries the next seed node). Sharded pub/sub
//! (`SPUBLISH`) would keep messages inside one shard, which only pays at message rates far
//! above ours (invalidations, reloads, one heartbeat per instance per interval), and its client
//! side in the `redis` crate resubscribes silently after a reconnect, which would hide the very
//! gaps the subscriber must see.
//!
//! # Sentinel
//! The master is asked of the Sentinels (the `redis` crate checks its `ROLE`), and asked again
//! after any connection error or a `READONLY` reply (a failover demoted it), and every
//! [`SENTINEL_RECHECK`] in the background: after a manual failover the old master keeps
//! accepting writes until the Sentinels demote it, about 10 s later.
//!
//! # TLS
//! `rediss` schemes use rustls with the platform's roots, or only `ca_file`'s when given;
//! `cert_file`/`key_file` add a client certificate. A server that fails verification is an
//! error like any other, never a plaintext retry.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisFuture, TlsCertificates, TlsMode, Value,
};

use super::{redact_url, scrub, MAX_BACKOFF};
use crate::error::{Error, Result};

/// TLS material of a `RedisConfig`, read once when it is built.
#[derive(Clone, Default)]
pub struct Tls {
    /// PEM roots that replace the platform's.
    pub ca: Option<Vec<u8>>,
    /// PEM client certificate chain and key (both or neither).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    /// Accept any server certificate (test setups only).
    pub insecure: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca.is_some())
            .field("client_cert", &self.client.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl Tls {
    /// Reads `ca_file`, `cert_file` and `key_file`.
    ///
    /// # Errors
    /// `Error::Config` for a file that cannot be read or holds no PEM block, a certificate
    /// without its key (or the reverse), or `tls_insecure` together with `ca_file`.
    pub fn load(
        ca_file: Option<&str>,
        cert_file: Option<&str>,
        key_file: Option<&str>,
        insecure: bool,
    ) -> Result<Self> {
        let read = |what: &str, path: &str| -> Result<Vec<u8>> {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::config(format!("{what} {path:?} cannot be read: {e}")))?;
            if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(Error::config(format!("{what} {path:?} holds no PEM block")));
            }
            Ok(bytes)
        };
        if insecure && ca_file.is_some() {
            return Err(Error::config(
                "tls_insecure=True skips verification, so ca_file would be ignored: pass one of them",
            ));
        }
        let client = match (cert_file, key_file) {
            (Some(c), Some(k)) => Some((read("cert_file", c)?, read("key_file", k)?)),
            (None, None) => None,
            _ => {
                return Err(Error::config(
                    "cert_file and key_file go together (a client certificate and its key)",
                ))
            }
        };
        Ok(Self {
            ca: ca_file.map(|p| read("ca_file", p)).transpose()?,
            client,
            insecure,
        })
    }

    fn is_set(&self) -> bool {
        self.ca.is_some() || self.client.is_some() || self.insecure
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }

    /// A client for one server URL (`redis://`/`rediss://`/`unix://`).
    fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        let info = url.into_connection_info()?;
        if let ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            ..
        } = info.addr().clone()
        {
            let info = info.set_addr(ConnectionAddr::TcpTls {
                host,
                port,
                insecure: insecure || self.insecure,
                tls_params: None,
            });
            return redis::Client::build_with_tls(info, self.certificates());
        }
        redis::Client::open(info)
    }
}

/// The Redis deployment a URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One server: the URL as given.
    Single(String),
    /// A Cluster: one `redis://`/`rediss://` URL per seed node.
    Cluster(Vec<String>),
    /// Sentinels (`host:port`), the master's name, its database and credentials, TLS or not.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        db: i64,
        username: Option<String>,
        password: Option<String>,
        tls: bool,
    },
}

impl Mode {
    /// Parses a `RedisConfig` URL.
    ///
    /// # Errors
    /// `Error::Config` (never quoting the password) for a URL that names no usable deployment.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::config(scrub(&format!("url {}: {why}", redact_url(url)), url));
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad("not a URL"));
        };
        let (tls, kind) = match scheme.to_ascii_lowercase().as_str() {
            "redis+cluster" => (false, "cluster"),
            "rediss+cluster" => (true, "cluster"),
            "redis+sentinel" => (false, "sentinel"),
            "rediss+sentinel" => (true, "sentinel"),
            _ => {
                redis::Client::open(url).map_err(|e| bad(&e.to_string()))?;
                return Ok(Self::Single(url.to_owned()));
            }
        };
        // userinfo@host:port,host:port/path?query
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut nodes = Vec::new();
        for h in hosts.split(',') {
            let (host, port) = h
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .ok_or_else(|| bad(&format!("{h:?} is not host:port")))?;
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            nodes.push((host.to_owned(), port));
        }
        let base = if tls { "rediss" } else { "redis" };
        let user = userinfo.map_or(String::new(), |u| format!("{u}@"));
        if kind == "cluster" {
            if !path.trim_matches('/').is_empty() {
                return Err(bad(
                    "a Cluster has only database 0: no path after the nodes",
                ));
            }
            let urls: Vec<String> = nodes
                .iter()
                .map(|(h, p)| format!("{base}://{user}{h}:{p}"))
                .collect();
            for u in &urls {
                redis::Client::open(u.as_str()).map_err(|e| bad(&e.to_string()))?;
            }
            return Ok(Self::Cluster(urls));
        }
        let mut parts = path.trim_end_matches('/').splitn(2, '/');
        let master = parts.next().unwrap_or("");
        if master.is_empty() {
            return Err(bad("a Sentinel URL names its master: .../master_name[/db]"));
        }
        let db = match parts.next() {
            None | Some("") => 0,
            Some(d) => d
                .parse()
                .map_err(|_| bad(&format!("database {d:?} is not a number")))?,
        };
        // Credentials are the master's; parse them as the redis crate would.
        let probe = format!("redis://{user}{}:{}/", nodes[0].0, nodes[0].1);
        let info = probe
            .as_str()
            .into_connection_info()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self::Sentinel {
            sentinels: nodes,
            master: master.to_owned(),
            db,
            username: info.redis_settings().username().map(str::to_owned),
            password: info.redis_settings().password().map(str::to_owned),
            tls,
        })
    }

    /// Whether it connects with TLS.
    pub fn uses_tls(&self) -> bool {
        match self {
            Self::Single(u) => u.to_ascii_lowercase().starts_with("rediss://"),
            Self::Cluster(urls) => urls.iter().all(|u| u.starts_with("rediss://")),
            Self::Sentinel { tls, .. } => *tls,
        }
    }
}

/// What one `RedisConfig` connects to.
pub struct Target {
    kind: TargetKind,
    tls: Tls,
}

#[allow(clippy::large_enum_variant)] // one per RedisConfig, never moved on a hot path
enum TargetKind {
    Single(redis::Client),
    Cluster {
        client: redis::cluster::ClusterClient,
        /// A plain client per seed node, for the subscription.
        seeds: Vec<redis::Client>,
        next_seed: std::sync::atomic::AtomicUsize,
    },
    Sentinel(Arc<SentinelShared>),
}

impl Target {
    /// # Errors
    /// `Error::Config` for a URL that does not parse, or TLS options on a plaintext URL (they
    /// would be silently unused).
    pub fn new(url: &str, tls: &Tls) -> Result<Self> {
        let mode = Mode::parse(url)?;
        let bad = |e: &dyn std::fmt::Display| {
            Error::config(scrub(&format!("url {}: {e}", redact_url(url)), url))
        };
        if tls.is_set() && !mode.uses_tls() {
            return Err(Error::config(format!(
                "ca_file, cert_file, key_file and tls_insecure need a TLS URL (rediss://, rediss+cluster://, rediss+sentinel://), got {}",
                redact_url(url)
            )));
        }
        let kind = match mode {
            Mode::Single(u) => TargetKind::Single(tls.client(&u).map_err(|e| bad(&e))?),
            Mode::Cluster(urls) => {
                let seeds = urls
                    .iter()
                    .map(|u| tls.client(u))
                    .collect::<redis::RedisResult<Vec<_>>>()
                    .map_err(|e| bad(&e))?;
                let mut b = ClusterClientBuilder::new(urls.clone()).retries(1);
                if mode_tls(&urls) {
                    b = b
                        .tls(if tls.insecure {
                            TlsMode::Insecure
                        } else {
                            TlsMode::Secure
                        })
                        .certs(tls.certificates());
                }
                TargetKind::Cluster {
                    client: b.build().map_err(|e| bad(&e))?,
                    seeds,
                    next_seed: std::sync::atomic::AtomicUsize::new(0),
                }
            }
            Mode::Sentinel {
                sentinels,
                master,
                db,
                username,
                password,
                tls: secure,
            } => {
                let addrs = sentinels.iter().map(|(h, p)| {
                    if secure {
                        ConnectionAddr::TcpTls {
                            host: h.clone(),
                            port: *p,
                            insecure: tls.insecure,
                            tls_params: None,
                        }
                    } else {
                        ConnectionAddr::Tcp(h.clone(), *p)
                    }
                });
                let mut b = SentinelClientBuilder::new(addrs, &master, SentinelServerType::Master)
                    .map_err(|e| bad(&e))?
                    .set_client_to_redis_db(db);
                if let Some(u) = &username {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(p) = &password {
                    b = b.set_client_to_redis_password(p);
                }
                if secure {
                    let m = if tls.insecure {
                        TlsMode::Insecure
                    } else {
                        TlsMode::Secure
                    };
                    b = b
                        .set_client_to_redis_tls_mode(m)
                        .set_client_to_redis_certificates(tls.certificates())
                        .set_client_to_sentinel_tls_mode(m)
                        .set_client_to_sentinel_certificates(tls.certificates());
                }
                TargetKind::Sentinel(Arc::new(SentinelShared {
                    client: tokio::sync::Mutex::new(b.build().map_err(|e| bad(&e))?),
                    current: Mutex::new(None),
                    checked_ns: std::sync::atomic::AtomicU64::new(0),
                    checking: std::sync::atomic::AtomicBool::new(false),
                }))
            }
        };
        Ok(Self {
            kind,
            tls: tls.clone(),
        })
    }

    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// A lazily connecting, reconnecting connection; call it inside the L2 runtime (its tasks
    /// are spawned there).
    pub fn connect_lazy(&self, timeout: Duration) -> Option<Conn> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(MAX_BACKOFF);
        match &self.kind {
            TargetKind::Single(client) => {
                ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .ok()
                    .map(Conn::Single)
            }
            TargetKind::Cluster { client, .. } => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Some(Conn::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
            TargetKind::Sentinel(shared) => Some(Conn::Sentinel(SentinelConn {
                shared: shared.clone(),
                config,
            })),
        }
    }

    /// A client for the subscription: the server, the next Cluster seed node, or the master
    /// the Sentinels name now.
    ///
    /// # Errors
    /// A Sentinel that cannot be asked, or names no reachable master.
    pub async fn pubsub_client(&self) -> redis::RedisResult<redis::Client> {
        match &self.kind {
            TargetKind::Single(client) => Ok(client.clone()),
            TargetKind::Cluster {
                seeds, next_seed, ..
            } => {
                let i = next_seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(seeds[i % seeds.len()].clone())
            }
            TargetKind::Sentinel(shared) => shared.client.lock().await.async_get_client().await,
        }
    }
}

fn mode_tls(urls: &[String]) -> bool {
    urls.iter().all(|u| u.starts_with("rediss://"))
}

/// How often the Sentinels are asked again whether the master moved, while the old one still
/// answers (a manual failover leaves it accepting writes until the Sentinels demote it).
const SENTINEL_RECHECK: Duration = Duration::from_secs(2);

/// The Sentinel client and the master connection it gave.
struct SentinelShared {
    client: tokio::sync::Mutex<SentinelClient>,
    /// The master's connection and address; `None` until resolved, and again after it failed.
    current: Mutex<Option<(ConnectionManager, ConnectionAddr)>>,
    /// When the master was last asked for (`super::now_ns`), and whether a check runs now.
    checked_ns: std::sync::atomic::AtomicU64,
    checking: std::sync::atomic::AtomicBool,
}

/// A connection to the master a Sentinel names, resolved again after a failure.
#[derive(Clone)]
pub struct SentinelConn {
    shared: Arc<SentinelShared>,
    config: ConnectionManagerConfig,
}

impl SentinelConn {
    async fn master(&self) -> redis::RedisResult<ConnectionManager> {
        let cached = self.shared.current.lock().clone();
        if let Some((c, _)) = cached {
            self.recheck_in_background();
            return Ok(c);
        }
        self.resolve().await
    }

    /// Asks the Sentinels for the master and connects to it (keeping the connection when the
    /// master did not move).
    async fn resolve(&self) -> redis::RedisResult<ConnectionManager> {
        use std::sync::atomic::Ordering;
        let client = self.shared.client.lock().await.async_get_client().await?;
        self.shared
            .checked_ns
            .store(super::now_ns(), Ordering::Relaxed);
        let addr = client.get_connection_info().addr().clone();
        let mut current = self.shared.current.lock();
        if let Some((c, a)) = &*current {
            if *a == addr {
                return Ok(c.clone());
            }
        }
        let conn = ConnectionManager::new_lazy_with_config(client, self.config.clone())?;
        *current = Some((conn.clone(), addr));
        Ok(conn)
    }

    /// At most every [`SENTINEL_RECHECK`], one background task asks whether the master moved.
    fn recheck_in_background(&self) {
        use std::sync::atomic::Ordering;
        let last = self.shared.checked_ns.load(Ordering::Relaxed);
        if super::now_ns().saturating_sub(last) < super::ns(SENTINEL_RECHECK)
            || self.shared.checking.swap(true, Ordering::Relaxed)
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(SENTINEL_RECHECK, this.resolve()).await;
            this.shared
                .checked_ns
                .store(super::now_ns(), Ordering::Relaxed);
            this.shared.checking.store(false, Ordering::Relaxed);
        });
    }

    /// Forgets the master after an error that may mean it moved.
    fn check<T>(&self, r: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &r {
            if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || e.code() == Some("READONLY")
                || e.code() == Some("MASTERDOWN")
            {
                *self.shared.current.lock() = None;
            }
        }
        r
    }
}

/// One shared connection to a [`Target`].
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => Box::pin(async move {
                let r = match s.master().await {
                    Ok(mut c) => c.req_packed_command(cmd).await,
                    Err(e) => Err(e),
                };
                s.check(r)
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            // The cluster client sends a pipeline to one slot's node; ours are not atomic, so
            // each command goes to its own slot, all at once (the node connections are
            // multiplexed: one round trip per node, as a pipeline would be).
            Conn::Cluster(c) => {
                if pipeline.is_transaction() {
                    return c.req_packed_commands(pipeline, offset, count);
                }
                let c = c.clone();
                Box::pin(async move {
                    let each = pipeline.cmd_iter().map(|cmd| {
                        let mut c = c.clone();
                        async move { c.req_packed_command(cmd).await }
                    });
                    let values = futures_util::future::try_join_all(each).await?;
                    Ok(values.into_iter().skip(offset).take(count).collect())
                })
            }
            Conn::Sentinel(s) => Box::pin(async move {
                let r = match s.master().await {
                    Ok(mut c) => c.req_packed_commands(pipeline, offset, count).await,
                    Err(e) => Err(e),
                };
                s.check(r)
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) => 0,
            Conn::Sentinel(s) => s
                .shared
                .current
                .lock()
                .as_ref()
                .map_or(0, |(c, _)| c.get_db()),
        }
    }
}

impl Conn {
    /// Every key matching `pattern`: one `SCAN` walk on a server, one per primary on a Cluster.
    ///
    /// # Errors
    /// Any Redis error on the way.
    pub async fn scan_match(&mut self, pattern: &str) -> redis::RedisResult<Vec<String>> {
        let Conn::Cluster(c) = self else {
            return scan_node(self, pattern, None).await;
        };
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(c).await?;
        let mut found = Vec::new();
        for line in nodes.lines() {
            let mut fields = line.split(' ');
            let (Some(_id), Some(addr), Some(flags)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                continue;
            }
            // ip:port@cport[,hostname]
            let addr = addr.split(['@', ',']).next().unwrap_or("");
            let Some((host, port)) = addr.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.to_owned(),
                port,
            });
            found.extend(scan_node(self, pattern, Some(route)).await?);
        }
        Ok(found)
    }
}

async fn scan_node(
    conn: &mut Conn,
    pattern: &str,
    route: Option<RoutingInfo>,
) -> redis::RedisResult<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, keys): (u64, Vec<String>) = match (route.as_ref(), &mut *conn) {
            (Some(r), Conn::Cluster(c)) => {
                redis::from_redis_value(c.route_command(cmd, r.clone()).await?)?
            }
            (_, c) => cmd.query_async(c).await?,
        };
        out.extend(keys);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_deployment() {
        assert_eq!(
            Mode::parse("redis://h:1/0").unwrap(),
            Mode::Single("redis://h:1/0".into())
        );
        assert_eq!(
            Mode::parse("redis+cluster://:pw@a:1,b:2").unwrap(),
            Mode::Cluster(vec!["redis://:pw@a:1".into(), "redis://:pw@b:2".into()])
        );
        assert_eq!(
            Mode::parse("rediss+cluster://a:1/").unwrap(),
            Mode::Cluster(vec!["rediss://a:1".into()])
        );
        assert_eq!(
            Mode::parse("redis+sentinel://:s3cret@a:26379,b:26380/mymaster/2").unwrap(),
            Mode::Sentinel {
                sentinels: vec![("a".into(), 26379), ("b".into(), 26380)],
                master: "mymaster".into(),
                db: 2,
                username: None,
                password: Some("s3cret".into()),
                tls: false,
            }
        );
        for bad in [
            "redis+cluster://a",
            "redis+cluster://a:1/3",
            "redis+cluster://:1",
            "redis+sentinel://a:1",
            "redis+sentinel://a:1/",
            "redis+sentinel://a:1/m/x",
            "rediz://a:1",
        ] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
        let Err(e) = Mode::parse("redis+sentinel://:hunter2@a:1/m/x") else {
            panic!()
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn tls_options_need_a_tls_url() {
        let insecure = Tls {
            insecure: true,
            ..Tls::default()
        };
        assert!(Target::new("redis://h:1", &insecure).is_err());
        assert!(Target::new("redis+cluster://h:1", &insecure).is_err());
        assert!(Target::new("rediss://h:1", &insecure).is_ok());
        assert!(Target::new("rediss+sentinel://h:1/m", &insecure).is_ok());
        assert!(Tls::load(Some("/nonexistent"), None, None, false).is_err());
        assert!(Tls::load(None, Some("/etc/hostname"), None, false).is_err());
        assert!(Tls::load(Some("/etc/hostname"), None, None, true).is_err());
    }
}
